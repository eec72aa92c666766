"""Demo and training data, built through the services like any user's work: the demo accounts, master
records, equipment, lots and subject (``seed``) and one complete NK batch with real signatures
(``nk_batch``). Used by ``flask --app mfg init --demo`` and ``demo-batch``, the tests and the benchmarks;
never by the application's own screens."""
