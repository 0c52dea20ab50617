#!/usr/bin/env python3
"""Offline checks of template.yaml after SAM's own transform.

    template_check.py [template.yaml]

Transforms the template with aws-sam-translator (the library `sam deploy`
and CloudFormation run; no AWS account needed), then, for each scenario
below (parameter sets a deployer would choose), evaluates the conditions
and checks what cfn-lint cannot know:

- with the data tier on, every function runs in its private subnets
  behind its own security group; off, only where SubnetIds say;
- no function's environment holds a secret: the secret variables are
  declared empty, and no value comes from a NoEcho parameter;
- each function may read exactly the secrets its *_SECRET_ARN variables
  name (the signing key: only the functions that issue tokens, access
  or embed), and no
  statement of its role grants an action on every resource;
- every function but the migration's waits for the migrations;
- the database: TLS-only proxy, managed master password, the proxy
  reachable only from the functions, the cluster only from the proxy,
  and the migrations run by a custom resource with a bound.

Prints one line per scenario and every failure; exits 1 on any.
"""
import copy
import logging
import os
import re
import sys

# Actions that name no resource type (IAM's Service Authorization
# Reference), so they can only be granted on "*": bedrock:Rerank (the
# model it may use is bounded by bedrock:InvokeModel on the model's ARN).
RESOURCELESS = {"bedrock:Rerank"}

from samtranslator.translator.managed_policy_translator import ManagedPolicyLoader
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# AWS's own policies SAM attaches; their content is AWS's, scoped by AWS.
AWS_MANAGED = [
    "AWSLambdaBasicExecutionRole",
    "AWSLambdaVPCAccessExecutionRole",
    "AWSXrayWriteOnlyAccess",
    "AWSLambdaSQSQueueExecutionRole",
    "AWSLambdaRole",
]

# Variables that must never carry a value in AWS (common::secrets).
SECRET_VARS = {
    "DATABASE_URL",
    "DATABASE_ADMIN_URL",
    "JWT_SIGNING_KEY",
    "EMBEDDING_API_KEY",
    "CHAT_API_KEY",
    "AUTH_EXTERNAL_ISSUERS",
    "API_KEY_PEPPER",
}

ISSUERS = "auth-signup auth-login auth-refresh".split()

SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:{}-AbCdEf"
REQUIRED = {
    "JwtSigningKey": "-----BEGIN PRIVATE KEY-----\\nMC4CAQAw\\n-----END PRIVATE KEY-----",
    "JwtPublicKey": "-----BEGIN PUBLIC KEY-----\\nMCowBQYD\\n-----END PUBLIC KEY-----",
    "JwtKeyId": "key-1",
    "JwtIssuer": "https://api.example.com",
}

SCENARIOS = {
    "data tier (defaults)": {},
    "data tier, NAT, Bedrock, OpenAI keys, external issuers, domain, SES": {
        "NatGateway": "true",
        "MailProvider": "ses",
        "MailFrom": "invitations@example.com",
        "EmbeddingProvider": "bedrock",
        "ChatProvider": "openai",
        "ChatModel": "m",
        "ChatBaseUrl": "https://llm.example.com/v1",
        "ChatApiKey": "sk-test",
        "AuthExternalIssuers": '[{"issuer":"https://idp.example.com"}]',
        "JwtIssuer": "",
        "DomainName": "api.example.com",
        "CertificateArn": "arn:aws:acm:us-east-1:123456789012:certificate/abc",
    },
    "existing database, no VPC": {
        "CreateDatabase": "false",
        "DatabaseSecretArn": SECRET_ARN.format("db"),
        "EmbeddingProvider": "openai",
        "EmbeddingModel": "e",
        "EmbeddingBaseUrl": "https://emb.example.com/v1",
        "EmbeddingApiKey": "sk-emb",
    },
    "existing database in a VPC, with an admin login": {
        "CreateDatabase": "false",
        "DatabaseSecretArn": SECRET_ARN.format("db"),
        "DatabaseAdminSecretArn": SECRET_ARN.format("admin"),
        "SubnetIds": "subnet-1,subnet-2",
        "SecurityGroupIds": "sg-1",
    },
}


class Policies(ManagedPolicyLoader):
    """The managed policy names SAM resolves, without asking IAM."""

    def __init__(self):
        super().__init__(iam_client=None)

    def load(self):
        return {n: f"arn:aws:iam::aws:policy/service-role/{n}" for n in AWS_MANAGED}


NO_VALUE = object()


class Scenario:
    def __init__(self, template, overrides):
        self.t = template
        params = {}
        for name, p in template.get("Parameters", {}).items():
            if "Default" in p:
                params[name] = str(p["Default"])
        params.update(REQUIRED)
        params.update(overrides)
        for name, p in template.get("Parameters", {}).items():
            if p.get("Type") == "CommaDelimitedList":
                raw = params.get(name, "")
                params[name] = [v for v in raw.split(",")] if raw else [""]
        self.params = params
        self.conditions = {}

    def condition(self, name):
        if name not in self.conditions:
            self.conditions[name] = bool(self.value(self.t["Conditions"][name]))
        return self.conditions[name]

    def value(self, node):
        """Evaluates what conditions use: Equals, Not, And, Or, Condition,
        Ref (parameters), Join."""
        if isinstance(node, dict) and len(node) == 1:
            (k, v), = node.items()
            if k == "Fn::Equals":
                return self.value(v[0]) == self.value(v[1])
            if k == "Fn::Not":
                return not self.value(v[0])
            if k == "Fn::And":
                return all(self.value(x) for x in v)
            if k == "Fn::Or":
                return any(self.value(x) for x in v)
            if k == "Condition":
                return self.condition(v)
            if k == "Ref" and v in self.params:
                return self.params[v]
            if k == "Fn::Join":
                return v[0].join(self.value(x) for x in self.value(v[1]))
        if isinstance(node, list):
            return [self.value(x) for x in node]
        return node

    def resolve(self, node):
        """Picks the Fn::If branches and drops AWS::NoValue."""
        if isinstance(node, dict):
            if len(node) == 1 and "Fn::If" in node:
                cond, yes, no = node["Fn::If"]
                return self.resolve(yes if self.condition(cond) else no)
            if node == {"Ref": "AWS::NoValue"}:
                return NO_VALUE
            out = {}
            for k, v in node.items():
                r = self.resolve(v)
                if r is not NO_VALUE:
                    out[k] = r
            return out
        if isinstance(node, list):
            return [r for r in (self.resolve(x) for x in node) if r is not NO_VALUE]
        return node

    def param(self, node):
        """A Ref to a parameter as the parameter's value."""
        if isinstance(node, dict) and node.get("Ref") in self.params:
            return self.params[node["Ref"]]
        return node

    def resources(self):
        for name, r in self.t["Resources"].items():
            cond = r.get("Condition")
            if cond is None or self.condition(cond):
                yield name, self.resolve(r)


def refs(node):
    """Every Ref target and ${name} of a Sub under node."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "Ref" and isinstance(v, str):
                yield v
            elif k == "Fn::Sub":
                text = v if isinstance(v, str) else v[0]
                yield from re.findall(r"\$\{([A-Za-z0-9:]+)", text)
                if not isinstance(v, str):
                    yield from refs(v[1])
            else:
                yield from refs(v)
    elif isinstance(node, list):
        for x in node:
            yield from refs(x)


def unsub(node):
    """SAM's policy templates write an ARN as {"Fn::Sub": ["${x}", {"x": ARN}]}."""
    if isinstance(node, dict) and "Fn::Sub" in node and isinstance(node["Fn::Sub"], list):
        text, names = node["Fn::Sub"]
        m = re.fullmatch(r"\$\{(\w+)\}", text)
        if m and m.group(1) in names:
            return names[m.group(1)]
    return node


def as_list(x):
    return x if isinstance(x, list) else [x]


def check(template, name, overrides):
    s = Scenario(template, overrides)
    res = dict(s.resources())
    errors = []
    no_echo = {n for n, p in template["Parameters"].items() if p.get("NoEcho")}
    managed = {n: r for n, r in res.items() if r["Type"] == "AWS::IAM::ManagedPolicy"}
    functions = {n: r for n, r in res.items() if r["Type"] == "AWS::Lambda::Function"}
    in_vpc = 0
    for fname, f in functions.items():
        props = f["Properties"]
        env = props.get("Environment", {}).get("Variables", {})
        # The VPC.
        vpc = props.get("VpcConfig")
        if s.condition("CreatesDatabase"):
            want = {
                "SubnetIds": [{"Ref": "PrivateSubnetA"}, {"Ref": "PrivateSubnetB"}],
                "SecurityGroupIds": [{"Ref": "FunctionSecurityGroup"}],
            }
            if vpc != want:
                errors.append(f"{fname}: not in the created VPC: {vpc}")
        elif s.condition("InExistingVpc"):
            if not vpc or vpc.get("SubnetIds") != {"Ref": "SubnetIds"}:
                errors.append(f"{fname}: not in the given subnets: {vpc}")
        elif vpc:
            errors.append(f"{fname}: in a VPC though none was asked for: {vpc}")
        in_vpc += bool(vpc)
        # New code only after its migrations.
        if fname != "DatabaseMigrateFunction" and "DatabaseMigrations" not in as_list(
            f.get("DependsOn", [])
        ):
            errors.append(f"{fname}: may go live before the migrations (no DependsOn)")
        # No secret in the environment.
        for var, value in env.items():
            leaked = no_echo.intersection(refs(value))
            if leaked:
                errors.append(f"{fname}: {var} takes the NoEcho parameter(s) {sorted(leaked)}")
            if var in SECRET_VARS and value != "":
                errors.append(f"{fname}: {var} is set ({value!r}); it must come from {var}_SECRET_ARN")
            if isinstance(value, str) and re.search(r"-----BEGIN|://[^/@\s]+:[^/@\s]+@", value):
                errors.append(f"{fname}: {var} holds a key or a URL with a password")
        wanted = {
            var: s.param(value)
            for var, value in env.items()
            if var.endswith("_SECRET_ARN") and s.param(value) not in ("", None)
        }
        # The secrets its role may read, and the role's other grants.
        role_name = props["Role"]["Fn::GetAtt"][0]
        role = res[role_name]["Properties"]
        statements = []
        for p in role.get("Policies", []):
            statements += as_list(p["PolicyDocument"]["Statement"])
        for arn in role.get("ManagedPolicyArns", []):
            if isinstance(arn, dict) and arn.get("Ref") in managed:
                doc = managed[arn["Ref"]]["Properties"]["PolicyDocument"]
                statements += as_list(doc["Statement"])
            elif isinstance(arn, dict) and "Ref" in arn:
                errors.append(f"{fname}: policy {arn} is not created in this scenario")
            elif not any(str(arn).endswith("/" + m) for m in AWS_MANAGED):
                errors.append(f"{fname}: unexpected managed policy {arn}")
        readable = []
        for st in statements:
            actions = as_list(st.get("Action", []))
            resources = as_list(st.get("Resource", []))
            if st.get("Effect") != "Allow":
                continue
            if any(r in ("*", "arn:aws:*:*:*") for r in resources) and not set(
                actions
            ) <= RESOURCELESS:
                errors.append(f"{fname}: {actions} on every resource")
            if not resources:
                errors.append(f"{fname}: a statement for {actions} with no resource")
            if any(a in ("secretsmanager:GetSecretValue", "secretsmanager:*") for a in actions):
                readable += [s.param(unsub(r)) for r in resources]
        for var, arn in wanted.items():
            if arn not in readable:
                errors.append(f"{fname}: reads {var} ({arn}) without permission to")
        for arn in readable:
            if arn not in wanted.values():
                errors.append(f"{fname}: may read the secret {arn} it does not use")
        if {"Ref": "JwtSigningKeySecret"} in readable and not any(
            # EmbedToken signs widget visitors' embed tokens (another audience).
            fname.startswith(p) for p in ("AuthSignup", "AuthLogin", "AuthRefresh", "EmbedToken")
        ):
            errors.append(f"{fname}: may read the signing key")

    # The database.
    if s.condition("CreatesDatabase"):
        proxy = res["DatabaseProxy"]["Properties"]
        if proxy.get("RequireTLS") is not True:
            errors.append("DatabaseProxy: TLS is not required")
        cluster = res["DatabaseCluster"]["Properties"]
        if cluster.get("ManageMasterUserPassword") is not True:
            errors.append("DatabaseCluster: the master password is not managed by RDS")
        if "ServerlessV2ScalingConfiguration" not in cluster:
            errors.append("DatabaseCluster: not Serverless v2")
        ingress = {
            n: [
                rule.get("SourceSecurityGroupId") or rule.get("CidrIp")
                for rule in r["Properties"].get("SecurityGroupIngress", [])
            ]
            for n, r in res.items()
            if r["Type"] == "AWS::EC2::SecurityGroup"
        }
        if ingress.get("ProxySecurityGroup") != [{"Ref": "FunctionSecurityGroup"}]:
            errors.append(f"ProxySecurityGroup: reachable from {ingress.get('ProxySecurityGroup')}")
        if ingress.get("DatabaseSecurityGroup") != [{"Ref": "ProxySecurityGroup"}]:
            errors.append(f"DatabaseSecurityGroup: reachable from {ingress.get('DatabaseSecurityGroup')}")
        loose = [
            n
            for n, r in res.items()
            if r["Type"] == "AWS::EC2::SecurityGroupIngress"
        ]
        if loose:
            errors.append(f"separate ingress rules {loose}: check them here")
    migrations = res.get("DatabaseMigrations")
    if not migrations:
        errors.append("no DatabaseMigrations custom resource")
    else:
        props = migrations["Properties"]
        if props.get("ServiceToken") != {"Fn::GetAtt": ["DatabaseMigrateFunction", "Arn"]}:
            errors.append(f"DatabaseMigrations: served by {props.get('ServiceToken')}")
        if not 0 < int(props.get("ServiceTimeout", 3600)) <= 1000:
            errors.append("DatabaseMigrations: no ServiceTimeout near the function's own")
    print(
        f"{name}: {len(functions)} functions, {in_vpc} in a VPC, "
        f"{len(errors)} problem(s)"
    )
    return errors


def main(argv):
    # The translator needs a region (for ARNs it builds); any will do.
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    logging.disable(logging.WARNING)
    path = argv[0] if argv else os.path.join(ROOT, "template.yaml")
    with open(path) as f:
        source = yaml_parse(f.read())
    # As `sam package` leaves it: the code in S3.
    for r in source["Resources"].values():
        if r.get("Type") == "AWS::Serverless::Function":
            r["Properties"]["CodeUri"] = f"s3://artifacts/{r['Properties']['CodeUri']}.zip"
    failures = 0
    for name, overrides in SCENARIOS.items():
        params = {**REQUIRED, **overrides}
        try:
            out = transform(copy.deepcopy(source), params, Policies())
        except Exception as e:  # the translator's errors name the resource
            print(f"{name}: the SAM transform failed: {str(e)[:2000]}")
            failures += 1
            continue
        errors = check(out, name, overrides)
        for e in errors:
            print(f"  {e}")
        failures += len(errors)
    if failures:
        print(f"template_check: {failures} problem(s)")
        return 1
    print("template_check: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
