"""Recording from other libraries' hooks; each module imports its library
only when it is imported itself (the package never does):
:mod:`telemetry_orm.integrations.litellm`."""
