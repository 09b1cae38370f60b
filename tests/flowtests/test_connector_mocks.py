"""`interlace test` mocks of every connector kind, through the connector protocol: a rule
answers an operation of a named endpoint (SQL rows and counts, a SOAP body or fault, a publish
confirmed and captured, a file read or written), also inside branches and items, with the
same match / expect.calls checks as HTTP mocks.  No server runs: every endpoint below points
at a port nothing listens on, so a call the suite did not mock would fail."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from engine.testing.cli import run_paths
from engine.testing.report import Style, text_report

WSDL = (Path(__file__).resolve().parents[2] / "flows" / "stockquote.wsdl").read_text()

FLOWS = """
endpoints:
  orders-db: {sql: {url: "postgresql://app@127.0.0.1:9/orders", timeout: {connect: 1s}}}
  broker: {amqp: {url: "amqp://guest:guest@127.0.0.1:9/"}}
  sensors: {mqtt: {host: 127.0.0.1, port: 9}}
  partner: {sftp: {host: 127.0.0.1, port: 9, user: app, password: x, folder: /in, verify: false}}
  quotes: {soap: {url: "http://127.0.0.1:9/quotes", wsdl: stockquote.wsdl}}
  quotes12: {soap: {url: "http://127.0.0.1:9/quotes12", version: "1.2"}}

flows:
  order:
    source: {http: {method: GET, path: "/orders/{id}"}}
    steps:
      - call: {endpoint: orders-db, operation: query, sql: "SELECT id, total FROM orders WHERE id = :id",
               params: {id: "${path.id}"}, types: {id: integer}, expect: one}
  order-xml:
    source: {http: {method: GET, path: "/orders-xml"}}
    steps:
      - call: {endpoint: orders-db, operation: query, sql: "SELECT id, total FROM orders", as: xml}
  create:
    source: {http: {method: POST, path: /orders}}
    steps:
      - transaction:
          endpoint: orders-db
          steps:
            - call: {endpoint: orders-db, operation: execute, into: created,
                     sql: "INSERT INTO orders (total) VALUES (:total)", params: {total: "${payload.total}"}}
            - call: {endpoint: orders-db, operation: execute, into: stock,
                     sql: "UPDATE stock SET qty = qty - 1 WHERE sku = :sku", params: {sku: "${payload.sku}"}}
      - scatter:
          branches:
            - name: queued
              steps:
                - call: {endpoint: broker, operation: publish, exchange: orders,
                         routing_key: "order.${payload.country}", headers: {x-source: facade}}
            - name: announced
              steps:
                - foreach:
                    items: ${payload.lines}
                    steps:
                      - call: {endpoint: sensors, operation: publish, topic: "orders/${payload.sku}", qos: 1}
      - respond: {status: 201, json: {id: "${vars.created.body.key}", rows: "${vars.created.row_count}"}}
    on_error:
      - filter:
          if: ${error.code == 'constraint-violation'}
          steps: [{fail: {status: 409, code: duplicate, message: "order exists (${error.endpoint})"}}]
  archive:
    source: {http: {method: POST, path: /archive}}
    steps:
      - call: {endpoint: partner, operation: write, name: "order-${payload.id}.json"}
      - call: {endpoint: partner, operation: read, name: "receipt-${payload.id}.txt"}
  quote:
    source: {http: {method: GET, path: "/quotes/{symbol}"}}
    steps:
      - call: {endpoint: quotes, operation: getQuote, body: {symbol: "${path.symbol}"}}
    on_error:
      - filter:
          if: ${error.code == 'soap-fault'}
          steps: [{fail: {status: 404, code: unknown-symbol, message: "${error.fault.code}: ${error.fault.string}"}}]
  ping12:
    source: {http: {method: GET, path: /ping12}}
    steps:
      - call: {endpoint: quotes12, operation: ping, body: {}}
    on_error:
      - respond: {status: 503, json: {code: "${error.fault.code}", subcode: "${error.fault.subcode}",
                                      reason: "${error.fault.string}"}}
"""


def run(tmp_path: Path, suite: str) -> tuple[str, int, int]:
    (tmp_path / "stockquote.wsdl").write_text(WSDL)
    (tmp_path / "flows.yaml").write_text(dedent(FLOWS).lstrip())
    (tmp_path / "flows.test.yaml").write_text(dedent(suite).lstrip())
    import asyncio

    outcomes = asyncio.run(run_paths([tmp_path]))
    return text_report(outcomes, style=Style(False))


def test_sql_mocks_answer_rows_shaped_by_the_step_and_are_checked_like_http_calls(tmp_path: Path) -> None:
    text, passed, failed = run(tmp_path, """
    mocks:
      orders-db:
        - match: {operation: query, sql: "*FROM orders WHERE id*", params: {id: 7}}
          respond: {rows: [{id: 7, total: 42.5}]}
        - match: {operation: query, sql: "*FROM orders WHERE id*"}
          respond: {rows: []}
        - match: {operation: query}
          respond: {rows: [{id: 1, total: 2}, {id: 2, total: null}]}
    cases:
      - name: a row by key, the parameter bound as an integer
        request: {path: /orders/7}
        expect:
          status: 200
          json: {id: 7, total: 42.5}
          calls:
            orders-db: {count: 1, operation: query, params: {id: 7}, json: {id: 7}}
      - name: no row is the step's 404, as with a real database
        request: {path: /orders/8}
        expect: {status: 404, json_subset: {type: "https://interlace.dev/problems/not-found"}}
      - name: rows as XML
        request: {path: /orders-xml}
        expect:
          status: 200
          xpath: {"count(/rows/row)": 2, "string(/rows/row[1]/total)": "2", "string(/rows/row[2]/total/@nil)": "true"}
      - name: a mocked database that cannot be reached is a 502
        mocks: {orders-db: [{fail: unreachable}]}
        request: {path: /orders/7}
        expect: {status: 502, json_subset: {type: "https://interlace.dev/problems/backend-unreachable"}}
      - name: a statement timing out is a 504
        mocks: {orders-db: [{fail: timeout}]}
        request: {path: /orders/7}
        expect: {status: 504}
      - name: a wrong expectation on the call fails with the field
        request: {path: /orders/7}
        expect:
          status: 200
          calls: {orders-db: {params: {id: 9}}}
    """)
    assert (passed, failed) == (5, 1), text
    assert "calls orders-db: params is {\"id\": 7}, expected {\"id\": 9}" in text


CREATE = """
    mocks:
      orders-db:
        - match: {operation: execute, sql: "INSERT*"}
          respond: {row_count: 1, key: 1001}
        - match: {operation: execute, sql: "UPDATE stock*", params: {sku: SKU-1}}
          respond: {row_count: 1}
      broker:
        - match: {operation: publish, exchange: orders, routing_key: "order.*"}
          respond: {}
      sensors:
        - match: {topic: "orders/*"}
          respond: {}
    cases:
      - name: a transaction, a publish in a scatter branch and publishes in foreach items, all captured
        request:
          method: POST
          path: /orders
          json: {total: 42.5, sku: SKU-1, country: fr, lines: [{sku: A}, {sku: B}]}
        expect:
          status: 201
          json: {id: 1001, rows: 1}
          calls:
            orders-db: {count: 2, operation: execute, params: {sku: SKU-1}}
            broker: {count: 1, routing_key: order.fr, headers: {x-source: facade}, json_subset: {country: fr}}
            sensors: {count: 2, topic: orders/B, qos: 1, json: {sku: B}}
      - name: a constraint violation inside the transaction is mapped by the flow's handler
        mocks:
          orders-db: [{match: {sql: "INSERT*"}, fail: constraint}]
        request: {method: POST, path: /orders, json: {total: 1, sku: SKU-1, country: fr, lines: []}}
        expect:
          status: 409
          json_subset: {type: "https://interlace.dev/problems/duplicate", detail: order exists (orders-db)}
          calls: {broker: {count: 0}}
      - name: a publish the broker refuses fails the scatter
        mocks:
          broker: [{fail: rejected}]
        request: {method: POST, path: /orders, json: {total: 1, sku: SKU-1, country: fr, lines: []}}
        expect: {status: 502}
"""


def test_transactions_publishes_in_branches_and_items_are_mocked_and_captured(tmp_path: Path) -> None:
    text, passed, failed = run(tmp_path, CREATE)
    assert (passed, failed) == (3, 0), text


def test_file_operations_are_mocked_a_write_captured_and_a_read_answered(tmp_path: Path) -> None:
    text, passed, failed = run(tmp_path, """
    cases:
      - name: the order is written to the partner and the receipt read back
        mocks:
          partner:
            - match: {operation: write, name: "order-*.json"}
              respond: {}
            - match: {operation: read}
              respond: {text: "receipt 7: ok"}
        request: {method: POST, path: /archive, json: {id: 7, total: 3}}
        expect:
          status: 200
          text: "receipt 7: ok"
          calls:
            partner: {count: 2, operation: read, name: receipt-7.txt}
      - name: the written content is what the flow sent
        mocks:
          partner:
            - match: {operation: write}
              respond: {}
            - match: {operation: read}
              fail: rejected
        request: {method: POST, path: /archive, json: {id: 8, total: 3}}
        expect:
          status: 502
          calls:
            partner: {count: 2}
    """)
    assert (passed, failed) == (2, 0), text


def test_soap_mocks_answer_by_operation_with_a_body_or_a_fault_of_either_version(tmp_path: Path) -> None:
    text, passed, failed = run(tmp_path, """
    mocks:
      quotes:
        - match: {operation: getQuote, action: "http://example.com/stockquote/getQuote",
                  body: "${xpath('string(//*[local-name()=\\"symbol\\"])') == 'IBM'}"}
          respond: {json: {qty: 3, price: 141.5, name: ibm, symbol: IBM}}
        - match: {operation: getQuote}
          respond: {fault: {code: Client, subcode: UnknownSymbol, string: unknown symbol}}
      quotes12:
        - respond: {fault: {code: Sender, subcode: Busy, subcode_ns: "urn:q", string: try later}}
    cases:
      - name: the WSDL's typed answer, written from the mock's JSON in the schema's order
        request: {path: /quotes/IBM}
        expect:
          status: 200
          json: {symbol: IBM, name: ibm, price: 141.5, qty: 3}
          calls:
            quotes: {count: 1, operation: getQuote, headers: {soapaction: '"http://example.com/stockquote/getQuote"'}}
      - name: a 1.1 fault reaches the handler with its fields
        request: {path: /quotes/NOPE}
        expect:
          status: 404
          json_subset: {detail: "Client.UnknownSymbol: unknown symbol",
                        type: "https://interlace.dev/problems/unknown-symbol"}
      - name: a 1.2 fault with its code, subcode and reason
        request: {path: /ping12}
        expect:
          status: 503
          json: {code: Sender, subcode: Busy, reason: try later}
    """)
    assert (passed, failed) == (3, 0), text


def test_mock_rules_that_do_not_fit_their_endpoint_kind_are_mistakes_with_their_place(tmp_path: Path) -> None:
    text, passed, failed = run(tmp_path, """
    cases:
      - name: a topic on a database
        mocks:
          orders-db:
            - match: {topic: x}
              respond: {rows: []}
        request: {path: /orders/1}
        expect: {status: 200}
      - name: rows from a broker
        mocks:
          broker:
            - respond: {rows: []}
        request: {path: /orders/1}
        expect: {status: 200}
      - name: a typo in an answer key
        mocks:
          orders-db:
            - respond: {rowz: []}
        request: {path: /orders/1}
        expect: {status: 200}
    """)
    assert (passed, failed) == (0, 3), text
    assert "flows.test.yaml:5:11: mistake in the case: mock for" in text
    assert "mock for 'orders-db' (sql): match has no 'topic' for this kind; it matches on body, operation, " \
           "params, sql" in text
    assert "mock for 'broker' (amqp): respond has no 'rows' for this kind" in text
    assert "rowz" in text


def test_an_unmocked_endpoint_that_needs_a_server_fails_each_call_naming_it(tmp_path: Path) -> None:
    text, passed, failed = run(tmp_path, """
    cases:
      - name: nothing mocks the database
        request: {path: /orders/7}
        expect: {status: 200}
    """)
    assert (passed, failed) == (0, 1), text
    assert "endpoint 'orders-db' got query {\"sql\":\"SELECT id, total FROM orders WHERE id = :id\"," in text
    assert "(add a rule under mocks: orders-db:)" in text


@pytest.mark.parametrize("example", ["stockquote-soap", "inventory-data"])
def test_the_examples_mock_their_sql_and_soap_endpoints(example: str) -> None:
    import asyncio

    repo = Path(__file__).resolve().parents[2]
    outcomes = asyncio.run(run_paths([repo / "flows" / f"{example}.test.yaml"]))
    text, passed, failed = text_report(outcomes, style=Style(False))
    assert failed == 0 and passed >= 10, text
