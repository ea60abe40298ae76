"""Small helpers shared by every layer (atomic files, seeding)."""
