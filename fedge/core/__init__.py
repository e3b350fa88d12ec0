"""The shared core of the customer and coordinator sides: tasks (models, data loading, validation, training),
privacy math, the wire contract between the two sides, process helpers and warm app processes."""
