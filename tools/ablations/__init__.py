"""Parts of ``tools/ablate_synthetic.py`` (imported with ``tools/`` on ``sys.path``).

- :mod:`.variants`: the ablation table (:data:`~.variants.VARIANTS`) and each run's CLIP;
- :mod:`.runner`: one training + evaluation run and the ``results.jsonl`` ledger (resume);
- :mod:`.page`: the ``ABLATIONS.md`` page and the ``ablations.png`` plot.
"""
