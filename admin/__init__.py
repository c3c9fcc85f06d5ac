"""The admin API: FastAPI app served by hypercorn on Trio inside the gateway."""

from admin.server import admin_service

__all__ = ["admin_service"]
