"""The admin API: FastAPI app served by hypercorn on Trio inside the gateway."""
