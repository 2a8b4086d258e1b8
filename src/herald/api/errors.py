"""Every refusal is a status, a JSON body with a ``code``, and ``Retry-After`` where it helps."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from herald.errors import HeraldError


def error_response(error: HeraldError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers())


def install_error_handlers(app: FastAPI) -> None:
    async def herald_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HeraldError)
        return error_response(exc)

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = [
            {"field": ".".join(str(p) for p in err.get("loc", ())[1:]), "problem": err.get("msg", "")}
            for err in exc.errors()[:20]
        ]
        return JSONResponse(
            {"code": "REQUEST_INVALID", "message": "the request body is not valid", "errors": problems},
            status_code=422,
        )

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "HTTP_ERROR")
        return JSONResponse(
            {"code": code, "message": str(exc.detail)},
            status_code=exc.status_code,
            headers=dict(exc.headers or {}),
        )

    app.add_exception_handler(HeraldError, herald_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
