"""The worker: capabilities, executors, workspace staging, log shipping. Talks to the server only through fetchml.client."""
