"""The module catalogue: the shipped definitions load, and a bad definition is refused naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.modules import catalogue, load_catalogue
from shared.tenants import ConfigError

# Every module shipped in shared/modules/, by name: one added or lost shows here.
SHIPPED = {
    "accounts",
    "assets",
    "attachments",
    "bank_accounts",
    "bank_transactions",
    "bills",
    "budgets",
    "campaigns",
    "companies",
    "contacts",
    "contracts",
    "cost_centers",
    "credit_notes",
    "currencies",
    "customers",
    "departments",
    "depreciations",
    "discounts",
    "employees",
    "events",
    "exchange_rates",
    "expenses",
    "invoice_lines",
    "invoices",
    "items",
    "journal_entries",
    "journal_lines",
    "leads",
    "leave_requests",
    "legacy_customers",
    "locations",
    "notes",
    "opportunities",
    "order_lines",
    "orders",
    "payments",
    "payroll_runs",
    "payslips",
    "price_lists",
    "product_categories",
    "projects",
    "purchase_order_lines",
    "purchase_orders",
    "quotes",
    "recurring_invoices",
    "returns",
    "shipments",
    "stock_levels",
    "stock_movements",
    "subscriptions",
    "suppliers",
    "tasks",
    "tax_rates",
    "ticket_comments",
    "tickets",
    "timesheets",
    "transactions",
    "users",
    "vendor_credits",
    "warehouses",
}


def test_shipped_catalogue_is_exactly_the_sixty_modules_with_every_type() -> None:
    modules = catalogue()
    assert set(modules.names()) == SHIPPED and len(modules) == len(SHIPPED) == 60
    assert modules.names() == sorted(modules.names())
    types = {c.type for m in modules for c in m.columns}
    assert types == {"text", "integer", "bigint", "numeric", "boolean", "date", "timestamptz", "jsonb"}
    assert {m.missing_rows for m in modules} == {"keep", "delete"}


def test_key_columns_are_required() -> None:
    contacts = catalogue().get("contacts")
    assert contacts.is_required(contacts.column("contact_id"))
    assert not contacts.is_required(contacts.column("phone"))
    assert contacts.column("email").csv_header == "E-mail"


def write(tmp_path: Path, name: str, text: str) -> Path:
    (tmp_path / f"{name}.yaml").write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: m\nkey: [id]\ncolumns: [{name: id, type: uuid}]\n", "'columns.0.type'"),
        ("name: m\nkey: [nope]\ncolumns: [{name: id, type: bigint}]\n", "key column(s) not among the columns: nope"),
        ("name: m\nkey: [id]\ncolumns: [{name: tenant_id, type: text}, {name: id, type: bigint}]\n", "reserved"),
        ("name: m\nkey: [id]\nencoding: klingon\ncolumns: [{name: id, type: bigint}]\n", "unknown encoding"),
        ("name: other\nkey: [id]\ncolumns: [{name: id, type: bigint}]\n", "must live in other.yaml"),
        ("name: m\nkey: [id]\ncolumns: [{name: id, type: bigint}, {name: x, type: text, header: id}]\n", "duplicate"),
    ],
)
def test_bad_definition_names_file_and_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_catalogue(write(tmp_path, "m", text))
    assert "m.yaml" in str(err.value) and message in str(err.value)


def test_two_modules_cannot_share_a_table(tmp_path: Path) -> None:
    write(tmp_path, "a", "name: a\ntable: t\nkey: [id]\ncolumns: [{name: id, type: bigint}]\n")
    write(tmp_path, "b", "name: b\ntable: t\nkey: [id]\ncolumns: [{name: id, type: bigint}]\n")
    with pytest.raises(ConfigError, match="both write table 't'"):
        load_catalogue(tmp_path)
