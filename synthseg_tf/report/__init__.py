"""Reports of experiments and training runs: one self-contained HTML page and a Markdown file.

``write_report(run_dir) -> (html_path, md_path)``; see :mod:`synthseg_tf.report.html`.
"""


def write_report(*args, **kwargs):
    """See :func:`synthseg_tf.report.html.write_report`."""
    from synthseg_tf.report.html import write_report as _write

    return _write(*args, **kwargs)


__all__ = ["write_report"]
