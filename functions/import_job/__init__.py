"""Task functions of the import state machine (statemachine/import_job.asl.json)."""
