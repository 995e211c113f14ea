"""The fault-injection suite (issue 10): each case injects one fault and asserts a clear error
(the file and the problem named, a documented exit code from ``synthseg_tf.errors``) or a correct
recovery, and that no output was lost, corrupted or duplicated."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/ helpers (write_scenes, ...)
