"""A gRPC upstream for the egress proxy's tests: the real grpcio server with generic
handlers (raw bytes, no generated code) for service test.Echo. Prints its port, then
serves until stdin closes; with CERT and KEY (PEM files) as arguments, over TLS (whose ALPN
offers h2 alone). Every call records its `authorization` metadata, which
Unary answers with; a request `fail` is refused with PERMISSION_DENIED."""

import sys
import time
from concurrent import futures

import grpc


def auth(ctx):
    return dict(ctx.invocation_metadata()).get("authorization", "")


def unary(request, ctx):
    if request == b"fail":
        ctx.abort(grpc.StatusCode.PERMISSION_DENIED, "the upstream says no")
    ctx.set_trailing_metadata((("x-upstream-trailer", "kept"),))
    return b"echo:" + request + b"|auth=" + auth(ctx).encode()


def server_stream(request, ctx):
    # "N" items, or "N/SECONDS" with that pause before each.
    count, _, gap = request.decode().partition("/")
    for i in range(int(count or "3")):
        time.sleep(float(gap or "0"))
        yield b"item-%d" % i


def client_stream(requests, ctx):
    return b"+".join(requests)


def bidi(requests, ctx):
    for message in requests:
        yield b"bidi:" + message


def main():
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", handlers),))
    if len(sys.argv) > 2:
        with open(sys.argv[1], "rb") as cert, open(sys.argv[2], "rb") as key:
            credentials = grpc.ssl_server_credentials(((key.read(), cert.read()),))
        port = server.add_secure_port("127.0.0.1:0", credentials)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    sys.stdin.read()
    server.stop(0)


if __name__ == "__main__":
    main()
