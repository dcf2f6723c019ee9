from shared.service import run_service

from .service import GatewayConfig, build

if __name__ == "__main__":
    run_service("gateway", GatewayConfig, build)
