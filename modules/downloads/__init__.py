"""Getting models onto disk from the Hugging Face Hub (the only place Visage goes online). Torch-free.

- :mod:`~modules.downloads.hub`    the Hub's metadata: endpoint, file size and sha256, repo listings, file URLs
- :mod:`~modules.downloads.files`  one file at a time: resumable, cancellable, checksummed, atomic
                                   (:func:`fetch_files`: some files of a repo into a folder)
- :mod:`~modules.downloads.repos`  a whole diffusers repo into the HF cache (snapshot download)
- :mod:`~modules.downloads.packs`  starter packs (typed data)
- :mod:`~modules.downloads.plan`   a plan (what goes where, sizes, free disk) shown before it runs, then run

Nothing here touches the network at import time.
"""
from modules.downloads.repos import (
    ALLOW_PATTERNS,
    IGNORE_PATTERNS,
    SUGGESTED,
    SuggestedModel,
    download_repo,
)

__all__ = ["ALLOW_PATTERNS", "IGNORE_PATTERNS", "SUGGESTED", "SuggestedModel", "download_repo"]
