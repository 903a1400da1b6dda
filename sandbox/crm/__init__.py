"""A local emulator of the peer CRM's custom-object records API (Brevo's ``/v3/objects`` and ``/v3/processes``).

Served by the same uvicorn server as the Experiture emulator under ``/crm/v3`` (see docs/sandbox.md,
"CRM emulator"). It shares only the HTTP plumbing with that emulator (the server, the fault plan and
the request log, applied by ``sandbox.app.Outer``); its routes, errors and state are its own and live
in memory, guarded by one lock, cleared by the sandbox reset.
"""
