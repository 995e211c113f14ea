"""``python -m synthseg_tf`` runs the ``synthseg`` command line."""
import sys

from synthseg_tf.cli import main

sys.exit(main())
