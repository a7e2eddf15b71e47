"""A gRPC client for the egress proxy's tests: the real grpcio client, generic calls
(raw bytes) to test.Echo at TARGET, naming the connection with Connd-Connection when
CONNECTION is not empty. Prints one JSON object: per call, the answer or the status
(with `unary-only`, one unary call)."""

import json
import sys

import grpc


def outcome(call):
    try:
        return {"ok": call()}
    except grpc.RpcError as e:
        return {"code": e.code().name, "details": e.details()}


def main():
    target, connection = sys.argv[1], sys.argv[2]
    metadata = (("connd-connection", connection),) if connection else ()
    channel = grpc.insecure_channel(target)
    unary = channel.unary_unary("/test.Echo/Unary")
    server_stream = channel.unary_stream("/test.Echo/ServerStream")
    client_stream = channel.stream_unary("/test.Echo/ClientStream")
    bidi = channel.stream_stream("/test.Echo/Bidi")

    def with_trailer():
        answer, call = unary.with_call(b"hello", metadata=metadata, timeout=10)
        trailers = dict(call.trailing_metadata() or ())
        return [answer.decode(), trailers.get("x-upstream-trailer", "")]

    if len(sys.argv) > 3 and sys.argv[3] == "unary-only":
        print(json.dumps({"unary": outcome(lambda: unary(b"hello", metadata=metadata, timeout=10).decode())}))
        return
    results = {
        "unary": outcome(with_trailer),
        "server_stream": outcome(lambda: [m.decode() for m in server_stream(b"4", metadata=metadata, timeout=10)]),
        "client_stream": outcome(
            lambda: client_stream(iter([b"a", b"b", b"c"]), metadata=metadata, timeout=10).decode()
        ),
        "bidi": outcome(lambda: [m.decode() for m in bidi(iter([b"x", b"y"]), metadata=metadata, timeout=10)]),
        "error": outcome(lambda: unary(b"fail", metadata=metadata, timeout=10).decode()),
    }
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
