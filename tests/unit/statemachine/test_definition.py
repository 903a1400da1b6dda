"""The import state machine's definition and its wiring in template.yaml."""

from __future__ import annotations

import json

import pytest

from cli.local_aws import (
    ROOT,
    LocalAwsError,
    definition_placeholders,
    function_arn,
    load_template,
    resolve_machine,
)

DEFINITION = ROOT / "statemachine" / "import_job.asl.json"
RELEASES = {"ReleaseAfterImport", "ReleaseAfterFailure", "ReleaseAfterReportError"}
TURN_RELEASES = {
    "ReleaseTurnAfterImport",
    "ReleaseTurnAfterFailure",
    "ReleaseTurnAfterRefusal",
    "ReleaseTurnAfterReportError",
}


@pytest.fixture(scope="module")
def template() -> dict:
    return load_template()


@pytest.fixture(scope="module")
def states() -> dict:
    return json.loads(DEFINITION.read_text())["States"]


def test_every_placeholder_has_a_substitution_and_every_substitution_is_used(template):
    # Given the definition's ${...} placeholders and the template's DefinitionSubstitutions
    used = definition_placeholders(DEFINITION.read_text())
    given = set(template["Resources"]["ImportStateMachine"]["Properties"]["DefinitionSubstitutions"])
    # Then they are the same set
    assert used, "the definition should take its ARNs from substitutions"
    assert used == given, f"missing: {sorted(used - given)}, unused: {sorted(given - used)}"


def test_every_substituted_function_exists_with_a_handler_the_runner_can_import(template):
    # When the runner resolves the substitutions, then every route is a real handler of a real function
    machine = resolve_machine(template)
    assert len(machine.routes) == len(definition_placeholders(DEFINITION.read_text()))
    assert "${" not in machine.definition


def test_every_task_calls_its_functions_alias_so_running_executions_keep_their_code(template):
    # Given the substitutions the definition's tasks take their function ARNs from
    props = template["Resources"]["ImportStateMachine"]["Properties"]
    for name, value in props["DefinitionSubstitutions"].items():
        # Then each is a function's published alias, never the function itself ($LATEST)
        assert set(value) == {"Ref"} and value["Ref"].endswith(".Alias"), name
        function = template["Resources"][value["Ref"].removesuffix(".Alias")]
        assert function["Properties"]["AutoPublishAlias"] == "live", name
    # And the local runner routes the alias ARNs (qualified :live) to the functions' handlers
    machine = resolve_machine(template)
    assert machine.routes and all(arn.endswith(":live") for arn in machine.routes)
    # (as a Task's Resource, or as FunctionName of lambda:invoke.waitForTaskToken)
    assert all(f'"{arn}"' in machine.definition for arn in machine.routes)


def test_the_runner_resolves_each_way_of_naming_a_function_and_refuses_anything_else(template):
    # Given the same template with the prepare task named three ways
    import copy

    for value, expected in (
        ({"Fn::GetAtt": ["ImportPrepareFunction", "Arn"]}, function_arn("ImportPrepareFunction")),
        ({"Ref": "ImportPrepareFunction.Alias"}, function_arn("ImportPrepareFunction", "live")),
        ({"Ref": "ImportPrepareFunctionAliaslive"}, function_arn("ImportPrepareFunction", "live")),
    ):
        changed = copy.deepcopy(template)
        changed["Resources"]["ImportStateMachine"]["Properties"]["DefinitionSubstitutions"][
            "PrepareFunctionArn"
        ] = value
        # Then each resolves to a route to the prepare handler
        machine = resolve_machine(changed)
        assert machine.routes[expected][0] == "ImportPrepareFunction"
    # And a reference the runner cannot route is an error naming the substitution
    changed = copy.deepcopy(template)
    changed["Resources"]["ImportStateMachine"]["Properties"]["DefinitionSubstitutions"][
        "PrepareFunctionArn"
    ] = {"Ref": "SomethingElse"}
    with pytest.raises(LocalAwsError, match="PrepareFunctionArn"):
        resolve_machine(changed)
    # And an alias reference to a function without AutoPublishAlias is refused
    changed = copy.deepcopy(template)
    del changed["Resources"]["ImportPrepareFunction"]["Properties"]["AutoPublishAlias"]
    with pytest.raises(LocalAwsError, match="no AutoPublishAlias"):
        resolve_machine(changed)


def test_the_machine_is_standard_traced_logged_and_alarmed(template):
    resources = template["Resources"]
    props = resources["ImportStateMachine"]["Properties"]
    assert props["Type"] == "STANDARD"
    assert props["DefinitionUri"] == "statemachine/import_job.asl.json"
    assert props["Tracing"] == {"Enabled": True}
    assert props["Logging"]["Destinations"][0]["CloudWatchLogsLogGroup"]["LogGroupArn"]
    alarms = {
        r["Properties"]["MetricName"]
        for r in resources.values()
        if r["Type"] == "AWS::CloudWatch::Alarm"
        and r["Properties"].get("Dimensions", [{}])[0].get("Value") == {"Ref": "ImportStateMachine"}
    }
    assert {"ExecutionsTimedOut"} <= alarms
    # ExecutionsFailed also counts files the CDP rejected: the page is on the pipeline's own metric
    assert "ExecutionsFailed" not in alarms
    assert resources["ImportPipelineFailedAlarm"]["Properties"]["MetricName"] == "ImportPipelineFailures"


def test_the_role_invokes_only_its_own_functions_and_starts_only_itself(template):
    props = template["Resources"]["ImportStateMachine"]["Properties"]
    invoked = {
        p["LambdaInvokePolicy"]["FunctionName"]["Ref"] for p in props["Policies"] if "LambdaInvokePolicy" in p
    }
    substituted = {v["Ref"].removesuffix(".Alias") for v in props["DefinitionSubstitutions"].values()}
    assert invoked == substituted
    statements = [s for p in props["Policies"] if "Statement" in p for s in p["Statement"]]
    start = [s for s in statements if s["Action"] == "states:StartExecution"]
    assert len(start) == 1
    assert start[0]["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:stateMachine:${AWS::StackName}-import-job"
    }
    assert props["Name"] == {"Fn::Sub": "${AWS::StackName}-import-job"}


def test_every_task_retries_transient_errors_with_capped_jitter_and_catches_to_a_summary(states):
    tasks = {name: s for name, s in states.items() if s["Type"] == "Task"}
    assert len(tasks) >= 7
    for name, state in tasks.items():
        assert state.get("Retry"), f"{name} has no Retry"
        for retry in state["Retry"]:
            assert retry["JitterStrategy"] == "FULL", name
            assert retry["MaxDelaySeconds"] > 0, name
        catch = state["Catch"]
        assert catch[-1]["ErrorEquals"] == ["States.ALL"], name
        target = {
            "ReportFailure": "ReleaseAfterReportError",
            "ReportSplitFailure": "ReleaseTurnAfterReportError",
            "PlanParts": "ReportSplitFailure",
            "CombineParts": "ReportSplitFailure",
        }.get(name, "ReportFailure")
        if name in RELEASES | TURN_RELEASES:  # a failed release does not change the ending (sweeper backstop)
            target = state["Next"]
        assert catch[-1]["Next"] == target, name
        for earlier in catch[:-1]:  # only a continuation that already exists ends otherwise
            assert (name, earlier["ErrorEquals"], earlier["Next"]) == (
                "ContinueAsNew",
                ["StepFunctions.ExecutionAlreadyExistsException"],
                "ContinuedAsNew",
            )
    transient = {e for s in tasks.values() for r in s["Retry"] for e in r["ErrorEquals"]}
    assert {"RateLimitedError", "ServerError", "TransportError", "WriteConflictError"} <= transient
    assert not transient & {"SchemaMismatchError", "ValidationError", "ConcurrencyLimitError"}


def test_the_split_branch_maps_retry_their_tasks_and_never_lose_a_part(states):
    # Given the split branch: a Route on {"split": ...}, then the two Distributed Maps
    assert states["Route"]["Choices"] == [{"Variable": "$.split", "IsPresent": True, "Next": "PlanParts"}]
    upload, imports = states["UploadParts"], states["ImportParts"]
    for state in (upload, imports):
        assert state["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
        assert state["ItemReader"]["Resource"] == "arn:aws:states:::s3:getObject"
        assert state["Catch"][-1] == {
            "ErrorEquals": ["States.ALL"],
            "ResultPath": "$.error",
            "Next": "ReportSplitFailure",
        }
        for name, inner in state["ItemProcessor"]["States"].items():
            if inner["Type"] == "Task":
                assert inner["Retry"] and all(r["JitterStrategy"] == "FULL" for r in inner["Retry"]), name
    # Then uploads run in parallel (as many workers as planned), imports one at a time (part order)
    assert upload["MaxConcurrencyPath"] == "$.plan.workers"
    assert imports["MaxConcurrency"] == 1
    # And a failed upload is recorded as the part's summary; a failed child run goes back to NextImport
    inner = upload["ItemProcessor"]["States"]
    assert inner["UploadPart"]["Catch"][-1]["Next"] == "RecordUploadFailure"
    child = imports["ItemProcessor"]["States"]["ImportPart"]
    assert child["Resource"] == "arn:aws:states:::states:startExecution.sync:2"
    assert child["Catch"][-1]["Next"] == "NextImport" and child["Next"] == "NextImport"


def test_waits_are_driven_by_seconds_path(states):
    waits = [s for s in states.values() if s["Type"] == "Wait"]
    assert waits and all(s["SecondsPath"] == "$.progress.waitSeconds" for s in waits)


def test_no_path_ends_without_a_summary(states):
    # Every way in to an end state comes from a task that writes a summary (or continues the run)
    ends = {n for n, s in states.items() if s["Type"] in ("Succeed", "Fail") or s.get("End")}
    sources: dict[str, set[str]] = {}
    for name, state in states.items():
        targets = [state.get("Next"), state.get("Default")]
        targets += [c["Next"] for c in state.get("Choices", [])] + [c["Next"] for c in state.get("Catch", [])]
        for target in filter(None, targets):
            sources.setdefault(target, set()).add(name)
    # (the split branch: AfterPlan follows PlanParts, which wrote the refusal; AfterCombine follows
    # CombineParts, which wrote the file's summary; ReportSplitFailure writes the failure summary)
    allowed = RELEASES | TURN_RELEASES | {"ContinueAsNew"}
    for end in ends:
        assert sources.get(end, set()) <= allowed, f"{end} is reached from {sources.get(end)}"
    for release in RELEASES:  # and every release comes right after a summary was written (or tried)
        assert sources[release] <= {"Collect", "ReportFailure"}, release
    for release in TURN_RELEASES:
        assert sources[release] <= {"AfterPlan", "AfterCombine", "ReportSplitFailure"}, release
    assert states["ImportFailed"]["CausePath"] == "$.report.cause"


def test_every_ending_but_a_continuation_gives_the_slot_back(states):
    # Given the ends of the machine
    for end in ("Imported", "ImportFailed", "SummaryNotWritten"):
        # Then each is reached only through a release step, which passes the whole state document
        feeding = [
            n
            for n, s in states.items()
            if s.get("Next") == end or end in [c["Next"] for c in s.get("Catch", [])]
        ]
        assert feeding and set(feeding) <= RELEASES, end
    for release in RELEASES:
        assert states[release]["Resource"] == "${ReleaseFunctionArn}"
        assert states[release]["Parameters"]["state.$"] == "$"
        assert states[release]["ResultPath"] is None
    # A continuation keeps the slot: the next execution of the run holds it
    assert states["ContinuedAsNew"]["Type"] == "Succeed"


def test_every_ending_of_the_split_flow_gives_the_files_turn_back(states):
    # Given the ends of the split branch (the file holds its object's turn in the queue from hand-off)
    for end in ("SplitImported", "SplitImportFailed", "SplitRefused", "SplitSummaryNotWritten"):
        # Then each is reached only through a turn release, passing the state (which holds the split)
        feeding = [
            n
            for n, s in states.items()
            if s.get("Next") == end or end in [c["Next"] for c in s.get("Catch", [])]
        ]
        assert feeding and set(feeding) <= TURN_RELEASES, end
    for release in TURN_RELEASES:
        assert states[release]["Resource"] == "${ReleaseFunctionArn}"
        assert states[release]["Parameters"]["state.$"] == "$"
        assert states[release]["ResultPath"] is None


def test_a_file_waits_for_its_slot_on_a_task_token_bounded_by_the_queue_limit(states):
    enqueue = states["Enqueue"]
    assert enqueue["Resource"] == "arn:aws:states:::lambda:invoke.waitForTaskToken"
    assert enqueue["Parameters"]["Payload"]["taskToken.$"] == "$$.Task.Token"
    assert enqueue["TimeoutSecondsPath"] == "$.progress.queueTimeoutSeconds"
    assert enqueue["Next"] == "StartJob" and states["SetMapping"]["Next"] == "Enqueue"
    after_start = {
        c["StringEquals"]: c["Next"] for c in states["AfterStart"]["Choices"] if "StringEquals" in c
    }
    assert after_start["enqueue"] == "Enqueue", "a refused start waits in the queue again"
    assert not [s for s in states.values() if s["Type"] == "Wait" and s.get("Next") == "StartJob"], (
        "no timed retry loop around the start"
    )


def test_storage_and_lambda_hiccups_are_retried_and_the_failure_summary_is_retried_before_giving_up(states):
    tasks = {name: s for name, s in states.items() if s["Type"] == "Task" and name != "ContinueAsNew"}
    for name, state in tasks.items():
        lambda_retry = next(r for r in state["Retry"] if "Lambda.ServiceException" in r["ErrorEquals"])
        assert "Lambda.Unknown" in lambda_retry["ErrorEquals"], name
    for name in ("Collect", "ReportFailure"):
        retried = {e for r in states[name]["Retry"] if r["MaxAttempts"] > 0 for e in r["ErrorEquals"]}
        assert "StorageUnavailableError" in retried, name
    # ReportFailure is idempotent: any task failure is tried again, but a summary that cannot exist is not
    retries = states["ReportFailure"]["Retry"]
    assert retries[-1]["ErrorEquals"] == ["States.TaskFailed"] and retries[-1]["MaxAttempts"] >= 2
    assert retries[0] == {**retries[0], "ErrorEquals": ["SummaryImpossibleError"], "MaxAttempts": 0}


def test_the_queue_is_an_on_demand_table_its_functions_scoped_to_it_and_to_this_machine(template):
    resources = template["Resources"]
    table = resources["ImportQueueTable"]["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert [k["AttributeName"] for k in table["KeySchema"]] == ["pk", "sk"]
    machine_arn = "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:stateMachine:${AWS::StackName}-import-job"
    for name in ("ImportEnqueueFunction", "ImportReleaseFunction", "ImportDispatchFunction"):
        props = resources[name]["Properties"]
        assert props["CodeUri"] == "functions/import_queue", name
        assert props["Environment"]["Variables"]["IMPORT_QUEUE_TABLE"] == {"Ref": "ImportQueueTable"}, name
        assert props["Environment"]["Variables"]["IMPORT_MAX_RUNNING_JOBS"] == {"Ref": "ImportMaxRunningJobs"}
        policies = props["Policies"]
        assert {"DynamoDBCrudPolicy": {"TableName": {"Ref": "ImportQueueTable"}}} in policies, name
        statements = [s for p in policies if "Statement" in p for s in p["Statement"]]
        grant = next(s for s in statements if s["Action"] == ["states:SendTaskSuccess"])
        assert grant["Resource"] == {"Fn::Sub": machine_arn}, name


def test_a_run_that_never_reached_a_release_step_is_released_by_a_rule_and_a_schedule(template):
    resources = template["Resources"]
    rule = resources["ImportReleaseFunction"]["Properties"]["Events"]["ExecutionEnded"]
    assert rule["Type"] == "EventBridgeRule"
    pattern = rule["Properties"]["Pattern"]
    assert pattern["source"] == ["aws.states"]
    assert pattern["detail-type"] == ["Step Functions Execution Status Change"]
    assert sorted(pattern["detail"]["status"]) == ["ABORTED", "FAILED", "TIMED_OUT"]
    assert pattern["detail"]["stateMachineArn"] == [{"Ref": "ImportStateMachine"}]
    schedule = resources["ImportDispatchFunction"]["Properties"]["Events"]["EveryMinute"]
    assert schedule["Type"] == "Schedule" and schedule["Properties"]["Schedule"] == "rate(1 minute)"
    outputs = template["Outputs"]
    assert outputs["ImportQueueTableName"]["Value"] == {"Ref": "ImportQueueTable"}
