"""The operator commands find a deployed stack through CloudFormation (moto here) and say clearly
when they cannot."""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from cli.main import main
from cli.operations import REQUIRED_OUTPUTS, DeployedStack, OperationError
from experiture_ingest.client.auth import ClientCredentials

REGION = "us-east-1"


def _template(outputs: tuple[str, ...]) -> str:
    return json.dumps(
        {
            "Parameters": {
                "ExperitureApiUrl": {"Type": "String"},
                "ExperitureSecretArn": {"Type": "String"},
            },
            "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
            "Outputs": {name: {"Value": f"value-of-{name}"} for name in outputs},
        }
    )


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        yield


def _deploy(name: str, outputs: tuple[str, ...], secret_arn: str = "arn:placeholder") -> None:
    boto3.client("cloudformation", region_name=REGION).create_stack(
        StackName=name,
        TemplateBody=_template(outputs),
        Parameters=[
            {"ParameterKey": "ExperitureApiUrl", "ParameterValue": "https://api.example.com/public/v1"},
            {"ParameterKey": "ExperitureSecretArn", "ParameterValue": secret_arn},
        ],
    )


def test_a_deployed_stack_is_read_from_its_outputs_and_its_secret(aws):
    # Given a stack and its OAuth secret with a token URL
    secret = boto3.client("secretsmanager", region_name=REGION).create_secret(
        Name="experiture/api",
        SecretString=json.dumps(
            {"clientId": "id", "clientSecret": "s3cr3t", "tokenUrl": "https://auth.example.com/token"}
        ),
    )
    _deploy("ingest", REQUIRED_OUTPUTS, secret["ARN"])
    # When the commands connect to it by name
    stack = DeployedStack.connect("ingest", REGION)
    # Then the outputs are there, and the API client uses the secret's credentials and token URL
    assert stack.outputs["IntakeFunctionName"] == "value-of-IntakeFunctionName"
    with stack.api_client() as client:
        assert client.base_url == "https://api.example.com/public/v1"
        auth = client._auth
        assert isinstance(auth, ClientCredentials)
        assert "https://auth.example.com/token" in repr(auth) and "s3cr3t" not in repr(auth)


def test_a_stack_without_the_outputs_says_which_are_missing(aws):
    _deploy("old", ("IngestBucketName",))
    with pytest.raises(OperationError, match="no output .*IntakeFunctionName.*deploy this version"):
        DeployedStack.connect("old", REGION)


def test_an_unknown_stack_fails_with_one_line(aws, capsys):
    # When a command names a stack that does not exist, it exits 2 with one clear line, no trace
    assert main(["redrive-intake", "--stack", "nope", "--region", REGION]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: stack 'nope':") and "Traceback" not in err
    assert main(["smoke", "--stack", "nope", "--region", REGION]) == 2
