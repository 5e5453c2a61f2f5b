"""The workspace: SQLite index + files of variants, the job store, checkpoints, repair, parcels for remote workers.
Imports core.base, core.data, core.models, core.formats, core.measure and core.compress."""
