"""The Qt console (the only package that imports Qt): window, panels, models, and the qasync glue.

``window.py`` arranges the panels; ``rigs_panel``/``rigs_model``, ``session_panel``,
``manipulators_panel`` and ``log_panel`` are one dock each; ``qtasync`` turns clicks into coroutines on
the qasync loop. Every action goes to :class:`app.console.Console`, which holds no Qt.
"""
