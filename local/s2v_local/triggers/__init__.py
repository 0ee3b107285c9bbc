"""What Lambda's event sources do on AWS, one module per kind of trigger in template.yaml:
``sqs`` (SQS poller), ``schedule`` (EventBridge schedule timer), ``http_api`` (API Gateway HTTP
API server) and ``stream`` (DynamoDB stream reader). The stack starts them; none names a function."""

import logging

ROUTER = "s2v-local-router"  # tags the requests Lambda's triggers would make on AWS

# Not "s2v…": Powertools filters every logger whose name contains its service name out of the root handlers.
log = logging.getLogger("local_router")
