"""Python clients against a Quiver server with TLS and static tokens: grpcio (a raw unary call,
as any generated stub makes it) and pyarrow.flight over grpc+tls, authenticating with the Flight
handshake (Basic credentials whose password is the token). Usage: URL CA_PEM TOKEN."""

import sys

import grpc
import pyarrow as pa
import pyarrow.flight as flight

# ListObjectsRequest { kind = OBJECT_KIND_FEATURE_VIEW (3) }
LIST_VIEWS = bytes([0x08, 0x03])


def grpcio(target, ca, token):
    credentials = grpc.ssl_channel_credentials(root_certificates=ca)
    with grpc.secure_channel(target, credentials) as channel:
        call = channel.unary_unary("/quiver.v1.RegistryService/ListObjects")
        try:
            call(LIST_VIEWS, timeout=10)
            raise AssertionError("a call without a token was served")
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
        call(LIST_VIEWS, timeout=10, metadata=[("authorization", f"Bearer {token}")])
    print("grpcio: ok")


def pyarrow_flight(target, ca, token):
    client = flight.connect(f"grpc+tls://{target}", tls_root_certs=ca)
    labels = pa.table({"user_id": pa.array([1], pa.int64())})
    descriptor = flight.FlightDescriptor.for_path("labels", "py_secure")
    try:
        writer, _ = client.do_put(descriptor, labels.schema)
        writer.write_table(labels)
        writer.close()
        raise AssertionError("an upload without a token was accepted")
    except flight.FlightUnauthenticatedError:
        pass
    header = client.authenticate_basic_token(b"notebook", token.encode())
    options = flight.FlightCallOptions(headers=[header])
    writer, _ = client.do_put(descriptor, labels.schema, options=options)
    writer.write_table(labels)
    writer.close()
    print("flight: ok")


def main():
    url, ca_path, token = sys.argv[1], sys.argv[2], sys.argv[3]
    target = url.removeprefix("https://")
    with open(ca_path, "rb") as f:
        ca = f.read()
    grpcio(target, ca, token)
    pyarrow_flight(target, ca, token)


if __name__ == "__main__":
    main()
