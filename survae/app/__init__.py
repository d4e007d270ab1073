"""The application around the library: the ``survae-run`` command line (:mod:`.cli`, the only
module that knows Hydra) and the evaluation of trained checkpoints (:mod:`.evaluation`)."""
