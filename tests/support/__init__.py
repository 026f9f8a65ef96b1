"""Helpers of the test suite, one concern per module (fixtures live in the conftest files).

cli          run `ledger` in-process through typer's CliRunner, check how it ended, read its ledger
clock        a fake clock whose sleep only moves time forward
client       settings, and a WebexClient on the fake clock against an httpx.MockTransport
csvfiles     write and read CSV files as a spreadsheet would
people       the CSV row of a person
ledgers      ledgers built without the executor (rows driven through `state_store`), and copied
claims       claim and lease scenarios, run against any backend
schema       the schema checks and the table of bad states, run against any backend
postgres     a throw-away PostgreSQL cluster
openapi      requests and answers checked against the Webex OpenAPI files
simulator    requests the simulator's own tests send it
scripted     the simulator in-process with chosen requests answered from a script
work         jobs: a CSV ingested into a ledger and worked against the simulator
system       the simulator on a socket and `ledger` as a subprocess
revoked      a simulator whose token is revoked right after `work`'s preflight
system_checks  the invariants the system tests check, read from the ledger file
rate_model   a rate-limited server and worker threads hammering it, in virtual time
"""
