"""The page's string tables, one module per language (:mod:`.en`, :mod:`.zh`). Data only, torch-free.

The keyed messages of errors and job notes (``rule.*``, ``note.*``, ``interrupted.*``, ``capability.*``) are
written once in English in :data:`modules.messages.EN`; :mod:`.zh` translates every one of them.
"""
