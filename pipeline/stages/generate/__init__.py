"""generate: chat replies with the LLM, continuously batched and streamed.

:mod:`.stage` is the stage; :mod:`.sessions` the conversations in its state
table; :mod:`.prompting` how a grounded prompt is written.
"""
