"""Notifiers: alert events rendered for the people who must act, and sent.

- :mod:`monitor.notify.text` — untrusted text made inert for each medium;
- :mod:`monitor.notify.slack` — Block Kit messages, an incoming webhook and the bot API
  (``chat.postMessage``), each send answered by a :class:`~monitor.notify.result.Result`.

Delivery (the outbox, retries, routing) hangs off these; a sender never retries by itself.
"""
