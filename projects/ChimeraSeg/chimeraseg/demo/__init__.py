"""The demos' plain parts: vocabulary syntax, the web app and its model-source interface.

``tools/demo.py`` (command line) and ``tools/web_demo.py`` (browser) share the vocabulary syntax of
:mod:`chimeraseg.demo.vocabulary`. The web app (:mod:`chimeraseg.demo.web`) runs any
:class:`~chimeraseg.demo.source.SegmentationSource`; the detectron2 one lives in
:mod:`chimeraseg.d2.web_source`.
"""
