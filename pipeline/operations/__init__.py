"""What an operator runs beside the pipeline: topics and ACLs applied, lag and status, scaling, redrive, deploy.

Nothing in the serving path (``pipeline/runtime``, ``pipeline/stages``,
``pipeline/tasks``, ``pipeline/models``) imports from here.
"""
