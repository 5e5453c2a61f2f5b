"""The model registry (create_model, list_models, structural edits) and transfer-learning heads.
Imports core.base only."""
