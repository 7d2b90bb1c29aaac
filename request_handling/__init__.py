"""Request handling for the SageMaker EfficientDet endpoint: parsing, S3, validation, responses.

In model.tar.gz this package sits in code/ beside lib/, the wheels the archive carries (deploy/vendor.py): lib/
goes first on the import path, so that the versions tested are the ones that serve.
"""

import sys
from pathlib import Path

_CARRIED = Path(__file__).resolve().parent.parent / "lib"
if _CARRIED.is_dir() and str(_CARRIED) not in sys.path:
    sys.path.insert(0, str(_CARRIED))
