"""Train a survae experiment: ``python run.py experiment=NAME [key=value ...]``.

The same as the ``survae-run`` command (see :mod:`survae.app.cli`); ``python run.py
--list-experiments`` prints every experiment with a one-line description.
"""

from survae.app.cli import list_experiments, main  # noqa: F401  (list_experiments: public API)

if __name__ == "__main__":
    main()
