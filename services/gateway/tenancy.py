"""Who is calling: the API key in the request metadata -> the tenant.

`GATEWAY_API_KEYS` lists the keys, "key1:tenant-a,key2:tenant-b" (a tenant may have several
keys). A caller sends its key as `x-api-key: <key>` or `authorization: Bearer <key>`, exactly once:
a missing or unknown key is UNAUTHENTICATED (reason API_KEY_INVALID), and so is a request that
carries more than one credential (reason AMBIGUOUS_CREDENTIALS), even two copies of one key, since
which of two keys would win is not something a caller should have to guess. With no keys configured there is no
authentication and every caller is the tenant "default" (for local use).

Every RPC of the public services (TextToSpeechService, VoiceCatalogService) starts with
`tenancy.tenant(context)`; health and reflection never do. The tenant scopes the voice catalogue:
the registry answers NOT_FOUND for another tenant's voices and previews.
"""

from __future__ import annotations

import hmac

import grpc

from shared.errors import Unauthenticated

DEFAULT_TENANT = "default"


def parse_api_keys(items: tuple[str, ...]) -> dict[str, str]:
    """{key: tenant} from the items of GATEWAY_API_KEYS; ValueError saying what is wrong (never the key)."""
    keys: dict[str, str] = {}
    for i, item in enumerate(items):
        key, _, tenant = item.partition(":")
        key, tenant = key.strip(), tenant.strip()
        if not key or not tenant:
            raise ValueError(f'item {i + 1} is not "key:tenant"')
        if key in keys:
            raise ValueError(f"item {i + 1} repeats an earlier key")
        keys[key] = tenant
    return keys


def _presented_keys(context: grpc.aio.ServicerContext) -> list[str]:
    """Every credential in the request metadata (an `authorization` that is not Bearer counts)."""
    keys = []
    for name, value in context.invocation_metadata() or ():
        if name == "x-api-key":
            keys.append(value)
        elif name == "authorization":
            keys.append(value[7:].strip() if value[:7].lower() == "bearer " else "")
    return keys


class Tenancy:
    def __init__(self, keys: dict[str, str]):
        self.keys = keys

    def tenant(self, context: grpc.aio.ServicerContext) -> str:
        """The caller's tenant; Unauthenticated if keys are configured and the caller did not send
        exactly one valid key."""
        if not self.keys:
            return DEFAULT_TENANT
        presented = _presented_keys(context)
        if len(presented) > 1:
            raise Unauthenticated(
                "the request carries more than one credential (x-api-key and authorization "
                "metadata together, or one of them repeated); send exactly one",
                reason="AMBIGUOUS_CREDENTIALS",
            )
        if presented and presented[0]:
            # Compared with every key in constant time, so timing tells nothing about the keys.
            found = [
                tenant for key, tenant in self.keys.items() if hmac.compare_digest(key.encode(), presented[0].encode())
            ]
            if found:
                return found[0]
        raise Unauthenticated(
            "a valid API key is required: send it as `x-api-key: <key>` or `authorization: Bearer <key>` metadata",
            reason="API_KEY_INVALID",
        )
