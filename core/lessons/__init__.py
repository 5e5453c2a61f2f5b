"""The Learn section's engine: lesson files (lessons/*.md: TOML front matter + Markdown sections)
parsed into Lesson objects (content.py), and the live experiments they name (registry.py and the
exp_*.py modules). A teacher adds a lesson by adding a file; page code does not change."""
