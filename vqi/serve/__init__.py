"""The local inspection web app (Flask): analyse an uploaded image, and the expert's review page.

Library code: `app.create_app` takes plain arguments (allowed folders, a checkpoint registry,
the review file), so the app runs and is tested without Hydra or MLflow.
"""
