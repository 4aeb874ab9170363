"""FastAPI dependencies: the one way a route reaches the gateway, the settings, the metrics and the credentials.

Everything lives on ``app.state`` (set by :func:`serving.app.create_app`); routes declare what they need with
``Depends`` instead of closing over it, so each router module stands alone. They are ``async def`` although they
never await: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop per dependency per request
(~12 % of the event loop's samples on the serving benchmark).
"""

from __future__ import annotations

import hmac
import math
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from monitoring.metrics import GatewayMetrics
from serving.config import GatewaySettings
from serving.gateway import Gateway


async def get_settings(request: Request) -> GatewaySettings:
    return request.app.state.settings


async def get_metrics(request: Request) -> GatewayMetrics:
    return request.app.state.metrics


async def get_gateway(request: Request) -> Gateway:
    return request.app.state.gateway


SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
MetricsDep = Annotated[GatewayMetrics, Depends(get_metrics)]
GatewayDep = Annotated[Gateway, Depends(get_gateway)]


def bearer_problem(authorization: str, expected: str | None, what: str) -> tuple[int, str] | None:
    """``(status, message)`` when the ``Authorization`` header does not carry the ``what`` token: 401 without a
    bearer token, 403 for a wrong one, 404 when this credential is not configured at all; None when it does."""
    if not expected:
        return 404, f"the {what} API is off (no {what} token configured)"
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return 401, "missing bearer token"
    if not hmac.compare_digest(token.encode(), expected.encode()):
        return 403, f"wrong {what} token"
    return None


def _check_bearer(request: Request, expected: str | None, what: str) -> None:
    problem = bearer_problem(request.headers.get("authorization", ""), expected, what)
    if problem is not None:
        raise StarletteHTTPException(*problem)


# Declared so the OpenAPI document carries the bearer security of each protected route (auto_error off: the
# answers are the gateway's own JSON 401/403/404 above, checked before the body is parsed by serving.middleware).
_ADMIN_BEARER = HTTPBearer(scheme_name="adminToken", auto_error=False,
                           description="the admin token (NASOPS_GATEWAY_ADMIN_TOKEN)")
_FEEDBACK_BEARER = HTTPBearer(scheme_name="feedbackToken", auto_error=False,
                              description="the feedback token (NASOPS_GATEWAY_FEEDBACK_TOKEN), not the admin one")


async def require_admin(request: Request, settings: SettingsDep,
                        _: Annotated[HTTPAuthorizationCredentials | None, Security(_ADMIN_BEARER)] = None) -> None:
    _check_bearer(request, settings.admin_token, "admin")


async def require_feedback(request: Request, settings: SettingsDep,
                           _: Annotated[HTTPAuthorizationCredentials | None, Security(_FEEDBACK_BEARER)] = None
                           ) -> None:
    _check_bearer(request, settings.feedback_token, "feedback")
    wait = request.app.state.feedback_limiter.take(request.headers.get("authorization", ""))
    if wait > 0:
        from serving.errors import count_invalid

        count_invalid(request.app, "rate_limited")
        raise StarletteHTTPException(429, f"over {settings.feedback_rate_per_s:g} feedback requests per second for "
                                     "this token", headers={"Retry-After": str(max(1, math.ceil(wait)))})
