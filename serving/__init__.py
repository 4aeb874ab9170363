"""The canary gateway: champion and challenger served side by side, validated, logged and measured.

Start one with :func:`serving.server.start_gateway`; configure it with :class:`serving.config.GatewaySettings`.
"""
