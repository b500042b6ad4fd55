"""Templates made into mail, an adapter over the template directory's files: the catalogue,
the ``Renderer`` (``templates``) and its parts, the skeletons of ``render_once``, the
variables templates are given, their checks. Its ``loading`` reads that directory's
templates; rules.yaml is read by ``mailbot.config.loading``."""
