"""moto's server (`moto_server`), with DynamoDB requests applied one at a time.

moto's TransactWriteItems is not atomic under concurrency: it evaluates and
applies each item without a lock, and on cancellation it restores a copy of every
table it touched, taken when the transaction began, erasing whatever other
requests wrote in between. Real DynamoDB transactions are serializable. Serving
DynamoDB (and DynamoDB Streams, which read the same tables) requests one at a
time gives the emulator that guarantee; S3 and KMS stay concurrent. See
docs/decisions.md ("The emulator serializes DynamoDB requests").
"""

import functools
import threading

from moto.dynamodb.responses import DynamoHandler
from moto.dynamodbstreams.responses import DynamoDBStreamsHandler
from moto.server import main

_dynamodb = threading.Lock()


def _serialized(call_action):
    @functools.wraps(call_action)
    def wrapper(self):
        with _dynamodb:
            return call_action(self)

    return wrapper


for _handler in (DynamoHandler, DynamoDBStreamsHandler):
    _handler.call_action = _serialized(_handler.call_action)

if __name__ == "__main__":
    main()
