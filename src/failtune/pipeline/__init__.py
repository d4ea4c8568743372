"""The resumable run (`failtune run`): its plan of steps, the state of a run folder, the engines
the steps share, the work of each step, the learning-rate sweep, the estimate and the demo."""
