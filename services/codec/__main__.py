"""`python -m services.codec`: the codec gRPC service (configured by CODEC_* variables)."""

from shared.service import run_service

from .service import CodecConfig, build

if __name__ == "__main__":
    run_service("codec", CodecConfig, build)
