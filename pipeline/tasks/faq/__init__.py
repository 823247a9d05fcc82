"""faq: answers from a knowledge base by retrieval.

:mod:`.task` is the task (split and merge); :mod:`.retrieval` scores
candidates, :mod:`.kb` loads the knowledge base, :mod:`.followup` resolves
follow-up questions.
"""
