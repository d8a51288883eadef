-- The tables of the first 60 modules (shared/modules/*.yaml), as `conduit imports ddl NAME` prints them.
-- A module added later gets its own migration.

CREATE TABLE "accounts" (
    tenant_id text NOT NULL,
    "code" text NOT NULL,
    "name" text NOT NULL,
    "type" text NOT NULL,
    "parent_code" text,
    "active" boolean,
    "opening_balance" numeric,
    "created_at" timestamptz,
    PRIMARY KEY (tenant_id, "code")
);
COMMENT ON TABLE "accounts" IS 'Module accounts: Chart of accounts';

CREATE TABLE "assets" (
    tenant_id text NOT NULL,
    "asset_id" bigint NOT NULL,
    "name" text NOT NULL,
    "category" text,
    "purchase_date" date,
    "purchase_price" numeric,
    "residual_value" numeric,
    "useful_life_months" integer,
    "disposed" boolean,
    PRIMARY KEY (tenant_id, "asset_id")
);
COMMENT ON TABLE "assets" IS 'Module assets: Fixed assets';

CREATE TABLE "attachments" (
    tenant_id text NOT NULL,
    "attachment_id" bigint NOT NULL,
    "document_type" text NOT NULL,
    "document_id" bigint NOT NULL,
    "file_name" text NOT NULL,
    "size_bytes" bigint,
    "mime_type" text,
    "uploaded_at" timestamptz,
    PRIMARY KEY (tenant_id, "attachment_id")
);
COMMENT ON TABLE "attachments" IS 'Module attachments: Files attached to documents';

CREATE TABLE "bank_accounts" (
    tenant_id text NOT NULL,
    "bank_account_id" bigint NOT NULL,
    "name" text NOT NULL,
    "iban" text,
    "bic" text,
    "currency" text NOT NULL,
    "balance" numeric,
    "updated_at" timestamptz,
    PRIMARY KEY (tenant_id, "bank_account_id")
);
COMMENT ON TABLE "bank_accounts" IS 'Module bank_accounts: Bank accounts';

CREATE TABLE "bank_transactions" (
    tenant_id text NOT NULL,
    "transaction_id" bigint NOT NULL,
    "bank_account_id" bigint NOT NULL,
    "booking_date" date NOT NULL,
    "value_date" date,
    "amount" numeric NOT NULL,
    "currency" text,
    "counterparty" text,
    "purpose" text,
    "reconciled" boolean,
    PRIMARY KEY (tenant_id, "transaction_id")
);
COMMENT ON TABLE "bank_transactions" IS 'Module bank_transactions: Bank statement lines';

CREATE TABLE "bills" (
    tenant_id text NOT NULL,
    "bill_id" bigint NOT NULL,
    "supplier_id" bigint NOT NULL,
    "number" text NOT NULL,
    "bill_date" date NOT NULL,
    "due_date" date,
    "total" numeric NOT NULL,
    "currency" text,
    "status" text,
    "paid" boolean,
    PRIMARY KEY (tenant_id, "bill_id")
);
COMMENT ON TABLE "bills" IS 'Module bills: Supplier bills';

CREATE TABLE "budgets" (
    tenant_id text NOT NULL,
    "account_code" text NOT NULL,
    "month" date NOT NULL,
    "amount" numeric NOT NULL,
    "cost_center" text,
    "note" text,
    PRIMARY KEY (tenant_id, "account_code", "month")
);
COMMENT ON TABLE "budgets" IS 'Module budgets: Budgets per account and month';

CREATE TABLE "campaigns" (
    tenant_id text NOT NULL,
    "campaign_id" bigint NOT NULL,
    "name" text NOT NULL,
    "channel" text,
    "starts_on" date,
    "ends_on" date,
    "budget" numeric,
    "active" boolean,
    "settings" jsonb,
    PRIMARY KEY (tenant_id, "campaign_id")
);
COMMENT ON TABLE "campaigns" IS 'Module campaigns: Marketing campaigns';

CREATE TABLE "companies" (
    tenant_id text NOT NULL,
    "company_id" bigint NOT NULL,
    "name" text NOT NULL,
    "vat_id" text,
    "country" text,
    "city" text,
    "employees" integer,
    "founded_on" date,
    "customer" boolean,
    "supplier" boolean,
    PRIMARY KEY (tenant_id, "company_id")
);
COMMENT ON TABLE "companies" IS 'Module companies: Customer and supplier companies';

CREATE TABLE "contacts" (
    tenant_id text NOT NULL,
    "contact_id" bigint NOT NULL,
    "company_id" bigint,
    "first_name" text,
    "last_name" text NOT NULL,
    "email" text,
    "phone" text,
    "birthday" date,
    "newsletter" boolean,
    "custom_fields" jsonb,
    "updated_at" timestamptz,
    PRIMARY KEY (tenant_id, "contact_id")
);
COMMENT ON TABLE "contacts" IS 'Module contacts: People at companies';

CREATE TABLE "contracts" (
    tenant_id text NOT NULL,
    "contract_id" bigint NOT NULL,
    "company_id" bigint NOT NULL,
    "title" text NOT NULL,
    "starts_on" date NOT NULL,
    "ends_on" date,
    "monthly_fee" numeric,
    "auto_renew" boolean,
    "signed_at" timestamptz,
    PRIMARY KEY (tenant_id, "contract_id")
);
COMMENT ON TABLE "contracts" IS 'Module contracts: Customer contracts';

CREATE TABLE "cost_centers" (
    tenant_id text NOT NULL,
    "code" text NOT NULL,
    "name" text NOT NULL,
    "manager_id" bigint,
    "active" boolean,
    PRIMARY KEY (tenant_id, "code")
);
COMMENT ON TABLE "cost_centers" IS 'Module cost_centers: Cost centres';

CREATE TABLE "credit_notes" (
    tenant_id text NOT NULL,
    "credit_note_id" bigint NOT NULL,
    "invoice_id" bigint,
    "number" text NOT NULL,
    "issued_on" date NOT NULL,
    "total" numeric NOT NULL,
    "currency" text,
    "reason" text,
    PRIMARY KEY (tenant_id, "credit_note_id")
);
COMMENT ON TABLE "credit_notes" IS 'Module credit_notes: Credit notes';

CREATE TABLE "currencies" (
    tenant_id text NOT NULL,
    "code" text NOT NULL,
    "name" text NOT NULL,
    "decimals" integer NOT NULL,
    "symbol" text,
    PRIMARY KEY (tenant_id, "code")
);
COMMENT ON TABLE "currencies" IS 'Module currencies: Currencies in use';

CREATE TABLE "customers" (
    tenant_id text NOT NULL,
    "customer_id" bigint NOT NULL,
    "company_id" bigint,
    "name" text NOT NULL,
    "payment_terms_days" integer,
    "credit_limit" numeric,
    "blocked" boolean,
    "created_at" timestamptz,
    PRIMARY KEY (tenant_id, "customer_id")
);
COMMENT ON TABLE "customers" IS 'Module customers: Customer master data';

CREATE TABLE "departments" (
    tenant_id text NOT NULL,
    "department_id" integer NOT NULL,
    "name" text NOT NULL,
    "parent_id" integer,
    "head_employee_id" bigint,
    PRIMARY KEY (tenant_id, "department_id")
);
COMMENT ON TABLE "departments" IS 'Module departments: Departments';

CREATE TABLE "depreciations" (
    tenant_id text NOT NULL,
    "asset_id" bigint NOT NULL,
    "period" date NOT NULL,
    "amount" numeric NOT NULL,
    "book_value" numeric NOT NULL,
    "posted" boolean,
    PRIMARY KEY (tenant_id, "asset_id", "period")
);
COMMENT ON TABLE "depreciations" IS 'Module depreciations: Asset depreciation schedule';

CREATE TABLE "discounts" (
    tenant_id text NOT NULL,
    "discount_id" bigint NOT NULL,
    "code" text NOT NULL,
    "percent" numeric,
    "amount" numeric,
    "valid_from" date,
    "valid_to" date,
    "active" boolean,
    PRIMARY KEY (tenant_id, "discount_id")
);
COMMENT ON TABLE "discounts" IS 'Module discounts: Discount rules';

CREATE TABLE "employees" (
    tenant_id text NOT NULL,
    "employee_id" bigint NOT NULL,
    "first_name" text NOT NULL,
    "last_name" text NOT NULL,
    "email" text,
    "department_id" integer,
    "hired_on" date,
    "salary" numeric,
    "full_time" boolean,
    "updated_at" timestamptz,
    PRIMARY KEY (tenant_id, "employee_id")
);
COMMENT ON TABLE "employees" IS 'Module employees: Employees';

CREATE TABLE "events" (
    tenant_id text NOT NULL,
    "event_id" bigint NOT NULL,
    "occurred_at" timestamptz NOT NULL,
    "actor" text,
    "kind" text NOT NULL,
    "payload" jsonb,
    PRIMARY KEY (tenant_id, "event_id")
);
COMMENT ON TABLE "events" IS 'Module events: Activity log events';

CREATE TABLE "exchange_rates" (
    tenant_id text NOT NULL,
    "currency" text NOT NULL,
    "rate_date" date NOT NULL,
    "rate" numeric NOT NULL,
    "source" text,
    PRIMARY KEY (tenant_id, "currency", "rate_date")
);
COMMENT ON TABLE "exchange_rates" IS 'Module exchange_rates: Daily exchange rates';

CREATE TABLE "expenses" (
    tenant_id text NOT NULL,
    "expense_id" bigint NOT NULL,
    "employee_id" bigint NOT NULL,
    "spent_on" date NOT NULL,
    "category" text,
    "amount" numeric NOT NULL,
    "currency" text,
    "reimbursed" boolean,
    "description" text,
    PRIMARY KEY (tenant_id, "expense_id")
);
COMMENT ON TABLE "expenses" IS 'Module expenses: Employee expenses';

CREATE TABLE "invoice_lines" (
    tenant_id text NOT NULL,
    "invoice_id" bigint NOT NULL,
    "line_no" integer NOT NULL,
    "item_id" bigint,
    "description" text,
    "quantity" numeric NOT NULL,
    "unit_price" numeric NOT NULL,
    "tax_rate" numeric,
    "discount_percent" numeric,
    PRIMARY KEY (tenant_id, "invoice_id", "line_no")
);
COMMENT ON TABLE "invoice_lines" IS 'Module invoice_lines: Lines of sales invoices';

CREATE TABLE "invoices" (
    tenant_id text NOT NULL,
    "invoice_id" bigint NOT NULL,
    "customer_id" bigint NOT NULL,
    "number" text NOT NULL,
    "issued_on" date NOT NULL,
    "due_on" date,
    "net_total" numeric NOT NULL,
    "tax_total" numeric,
    "gross_total" numeric NOT NULL,
    "currency" text NOT NULL,
    "paid" boolean,
    "sent_at" timestamptz,
    PRIMARY KEY (tenant_id, "invoice_id")
);
COMMENT ON TABLE "invoices" IS 'Module invoices: Sales invoices';

CREATE TABLE "items" (
    tenant_id text NOT NULL,
    "item_id" bigint NOT NULL,
    "sku" text NOT NULL,
    "name" text NOT NULL,
    "description" text,
    "unit" text,
    "price" numeric NOT NULL,
    "cost" numeric,
    "stock_tracked" boolean,
    "category_id" integer,
    "attributes" jsonb,
    PRIMARY KEY (tenant_id, "item_id")
);
COMMENT ON TABLE "items" IS 'Module items: Products and services';

CREATE TABLE "journal_entries" (
    tenant_id text NOT NULL,
    "entry_id" bigint NOT NULL,
    "posted_on" date NOT NULL,
    "reference" text,
    "description" text,
    "created_by" text,
    "created_at" timestamptz,
    PRIMARY KEY (tenant_id, "entry_id")
);
COMMENT ON TABLE "journal_entries" IS 'Module journal_entries: General ledger journal entries';

CREATE TABLE "journal_lines" (
    tenant_id text NOT NULL,
    "entry_id" bigint NOT NULL,
    "line_no" integer NOT NULL,
    "account_code" text NOT NULL,
    "debit" numeric,
    "credit" numeric,
    "cost_center" text,
    PRIMARY KEY (tenant_id, "entry_id", "line_no")
);
COMMENT ON TABLE "journal_lines" IS 'Module journal_lines: Debit and credit lines of journal entries';

CREATE TABLE "leads" (
    tenant_id text NOT NULL,
    "lead_id" bigint NOT NULL,
    "name" text NOT NULL,
    "email" text,
    "source" text,
    "score" integer,
    "converted" boolean,
    "created_at" timestamptz,
    PRIMARY KEY (tenant_id, "lead_id")
);
COMMENT ON TABLE "leads" IS 'Module leads: Sales leads';

CREATE TABLE "leave_requests" (
    tenant_id text NOT NULL,
    "request_id" bigint NOT NULL,
    "employee_id" bigint NOT NULL,
    "kind" text NOT NULL,
    "starts_on" date NOT NULL,
    "ends_on" date NOT NULL,
    "days" numeric,
    "approved" boolean,
    PRIMARY KEY (tenant_id, "request_id")
);
COMMENT ON TABLE "leave_requests" IS 'Module leave_requests: Holiday and leave requests';

CREATE TABLE "legacy_customers" (
    tenant_id text NOT NULL,
    "customer_no" integer NOT NULL,
    "name" text NOT NULL,
    "city" text,
    "street" text,
    "balance" numeric,
    PRIMARY KEY (tenant_id, "customer_no")
);
COMMENT ON TABLE "legacy_customers" IS 'Module legacy_customers: Customers from the old system, exported in Windows-1252';

CREATE TABLE "locations" (
    tenant_id text NOT NULL,
    "location_id" integer NOT NULL,
    "name" text NOT NULL,
    "street" text,
    "city" text,
    "postal_code" text,
    "country" text,
    "latitude" numeric,
    "longitude" numeric,
    PRIMARY KEY (tenant_id, "location_id")
);
COMMENT ON TABLE "locations" IS 'Module locations: Business locations';

CREATE TABLE "notes" (
    tenant_id text NOT NULL,
    "note_id" bigint NOT NULL,
    "record_type" text NOT NULL,
    "record_id" bigint NOT NULL,
    "body" text NOT NULL,
    "author" text,
    "created_at" timestamptz,
    PRIMARY KEY (tenant_id, "note_id")
);
COMMENT ON TABLE "notes" IS 'Module notes: Free-text notes on records';

CREATE TABLE "opportunities" (
    tenant_id text NOT NULL,
    "opportunity_id" bigint NOT NULL,
    "company_id" bigint,
    "name" text NOT NULL,
    "stage" text NOT NULL,
    "amount" numeric,
    "probability" integer,
    "expected_close" date,
    "won" boolean,
    PRIMARY KEY (tenant_id, "opportunity_id")
);
COMMENT ON TABLE "opportunities" IS 'Module opportunities: Sales opportunities';

CREATE TABLE "order_lines" (
    tenant_id text NOT NULL,
    "order_id" bigint NOT NULL,
    "line_no" integer NOT NULL,
    "item_id" bigint NOT NULL,
    "quantity" numeric NOT NULL,
    "unit_price" numeric NOT NULL,
    "delivered" numeric,
    PRIMARY KEY (tenant_id, "order_id", "line_no")
);
COMMENT ON TABLE "order_lines" IS 'Module order_lines: Lines of sales orders';

CREATE TABLE "orders" (
    tenant_id text NOT NULL,
    "order_id" bigint NOT NULL,
    "customer_id" bigint NOT NULL,
    "ordered_at" timestamptz NOT NULL,
    "status" text NOT NULL,
    "total" numeric,
    "currency" text,
    "shipped" boolean,
    PRIMARY KEY (tenant_id, "order_id")
);
COMMENT ON TABLE "orders" IS 'Module orders: Sales orders';

CREATE TABLE "payments" (
    tenant_id text NOT NULL,
    "payment_id" bigint NOT NULL,
    "invoice_id" bigint,
    "paid_on" date NOT NULL,
    "amount" numeric NOT NULL,
    "currency" text NOT NULL,
    "method" text,
    "reference" text,
    "refunded" boolean,
    PRIMARY KEY (tenant_id, "payment_id")
);
COMMENT ON TABLE "payments" IS 'Module payments: Incoming and outgoing payments';

CREATE TABLE "payroll_runs" (
    tenant_id text NOT NULL,
    "run_id" bigint NOT NULL,
    "period" date NOT NULL,
    "status" text NOT NULL,
    "gross_total" numeric,
    "net_total" numeric,
    "paid_on" date,
    PRIMARY KEY (tenant_id, "run_id")
);
COMMENT ON TABLE "payroll_runs" IS 'Module payroll_runs: Payroll runs';

CREATE TABLE "payslips" (
    tenant_id text NOT NULL,
    "payslip_id" bigint NOT NULL,
    "run_id" bigint NOT NULL,
    "employee_id" bigint NOT NULL,
    "gross" numeric NOT NULL,
    "net" numeric NOT NULL,
    "tax" numeric,
    "social_security" numeric,
    PRIMARY KEY (tenant_id, "payslip_id")
);
COMMENT ON TABLE "payslips" IS 'Module payslips: Payslips';

CREATE TABLE "price_lists" (
    tenant_id text NOT NULL,
    "price_list" text NOT NULL,
    "item_id" bigint NOT NULL,
    "price" numeric NOT NULL,
    "valid_from" date,
    "currency" text,
    PRIMARY KEY (tenant_id, "price_list", "item_id")
);
COMMENT ON TABLE "price_lists" IS 'Module price_lists: Price list entries';

CREATE TABLE "product_categories" (
    tenant_id text NOT NULL,
    "category_id" integer NOT NULL,
    "name" text NOT NULL,
    "parent_id" integer,
    "sort_order" integer,
    PRIMARY KEY (tenant_id, "category_id")
);
COMMENT ON TABLE "product_categories" IS 'Module product_categories: Product categories';

CREATE TABLE "projects" (
    tenant_id text NOT NULL,
    "project_id" bigint NOT NULL,
    "name" text NOT NULL,
    "customer_id" bigint,
    "starts_on" date,
    "ends_on" date,
    "budget_hours" numeric,
    "billable" boolean,
    "status" text,
    PRIMARY KEY (tenant_id, "project_id")
);
COMMENT ON TABLE "projects" IS 'Module projects: Projects';

CREATE TABLE "purchase_order_lines" (
    tenant_id text NOT NULL,
    "purchase_order_id" bigint NOT NULL,
    "line_no" integer NOT NULL,
    "item_id" bigint NOT NULL,
    "quantity" numeric NOT NULL,
    "unit_cost" numeric NOT NULL,
    "received" numeric,
    PRIMARY KEY (tenant_id, "purchase_order_id", "line_no")
);
COMMENT ON TABLE "purchase_order_lines" IS 'Module purchase_order_lines: Lines of purchase orders';

CREATE TABLE "purchase_orders" (
    tenant_id text NOT NULL,
    "purchase_order_id" bigint NOT NULL,
    "supplier_id" bigint NOT NULL,
    "ordered_on" date NOT NULL,
    "expected_on" date,
    "status" text NOT NULL,
    "total" numeric,
    PRIMARY KEY (tenant_id, "purchase_order_id")
);
COMMENT ON TABLE "purchase_orders" IS 'Module purchase_orders: Purchase orders';

CREATE TABLE "quotes" (
    tenant_id text NOT NULL,
    "quote_id" bigint NOT NULL,
    "customer_id" bigint NOT NULL,
    "number" text NOT NULL,
    "issued_on" date NOT NULL,
    "valid_until" date,
    "total" numeric NOT NULL,
    "accepted" boolean,
    PRIMARY KEY (tenant_id, "quote_id")
);
COMMENT ON TABLE "quotes" IS 'Module quotes: Sales quotes';

CREATE TABLE "recurring_invoices" (
    tenant_id text NOT NULL,
    "template_id" bigint NOT NULL,
    "customer_id" bigint NOT NULL,
    "interval_months" integer NOT NULL,
    "next_run" date,
    "amount" numeric NOT NULL,
    "active" boolean,
    PRIMARY KEY (tenant_id, "template_id")
);
COMMENT ON TABLE "recurring_invoices" IS 'Module recurring_invoices: Recurring invoice templates';

CREATE TABLE "returns" (
    tenant_id text NOT NULL,
    "return_id" bigint NOT NULL,
    "order_id" bigint NOT NULL,
    "returned_on" date NOT NULL,
    "reason" text,
    "quantity" integer NOT NULL,
    "refunded" boolean,
    PRIMARY KEY (tenant_id, "return_id")
);
COMMENT ON TABLE "returns" IS 'Module returns: Customer returns';

CREATE TABLE "shipments" (
    tenant_id text NOT NULL,
    "shipment_id" bigint NOT NULL,
    "order_id" bigint NOT NULL,
    "carrier" text,
    "tracking_no" text,
    "shipped_at" timestamptz,
    "delivered_at" timestamptz,
    "weight_kg" numeric,
    PRIMARY KEY (tenant_id, "shipment_id")
);
COMMENT ON TABLE "shipments" IS 'Module shipments: Shipments';

CREATE TABLE "stock_levels" (
    tenant_id text NOT NULL,
    "item_id" bigint NOT NULL,
    "warehouse_id" integer NOT NULL,
    "on_hand" numeric NOT NULL,
    "reserved" numeric,
    "reorder_level" numeric,
    "counted_at" timestamptz,
    PRIMARY KEY (tenant_id, "item_id", "warehouse_id")
);
COMMENT ON TABLE "stock_levels" IS 'Module stock_levels: Current stock per item and warehouse (a full snapshot)';

CREATE TABLE "stock_movements" (
    tenant_id text NOT NULL,
    "movement_id" bigint NOT NULL,
    "item_id" bigint NOT NULL,
    "warehouse_id" integer NOT NULL,
    "moved_at" timestamptz NOT NULL,
    "quantity" numeric NOT NULL,
    "reason" text,
    PRIMARY KEY (tenant_id, "movement_id")
);
COMMENT ON TABLE "stock_movements" IS 'Module stock_movements: Stock movements';

CREATE TABLE "subscriptions" (
    tenant_id text NOT NULL,
    "subscription_id" bigint NOT NULL,
    "customer_id" bigint NOT NULL,
    "plan" text NOT NULL,
    "seats" integer,
    "monthly_price" numeric,
    "started_on" date,
    "cancelled_on" date,
    "active" boolean,
    PRIMARY KEY (tenant_id, "subscription_id")
);
COMMENT ON TABLE "subscriptions" IS 'Module subscriptions: Customer subscriptions';

CREATE TABLE "suppliers" (
    tenant_id text NOT NULL,
    "supplier_id" bigint NOT NULL,
    "company_id" bigint,
    "name" text NOT NULL,
    "payment_terms_days" integer,
    "iban" text,
    "preferred" boolean,
    PRIMARY KEY (tenant_id, "supplier_id")
);
COMMENT ON TABLE "suppliers" IS 'Module suppliers: Supplier master data';

CREATE TABLE "tasks" (
    tenant_id text NOT NULL,
    "task_id" bigint NOT NULL,
    "project_id" bigint NOT NULL,
    "title" text NOT NULL,
    "assignee_id" bigint,
    "due_on" date,
    "estimate_hours" numeric,
    "done" boolean,
    PRIMARY KEY (tenant_id, "task_id")
);
COMMENT ON TABLE "tasks" IS 'Module tasks: Project tasks';

CREATE TABLE "tax_rates" (
    tenant_id text NOT NULL,
    "code" text NOT NULL,
    "name" text NOT NULL,
    "rate" numeric NOT NULL,
    "valid_from" date,
    "country" text,
    PRIMARY KEY (tenant_id, "code")
);
COMMENT ON TABLE "tax_rates" IS 'Module tax_rates: Tax rates';

CREATE TABLE "ticket_comments" (
    tenant_id text NOT NULL,
    "comment_id" bigint NOT NULL,
    "ticket_id" bigint NOT NULL,
    "author" text,
    "body" text NOT NULL,
    "internal" boolean,
    "created_at" timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, "comment_id")
);
COMMENT ON TABLE "ticket_comments" IS 'Module ticket_comments: Comments on support tickets';

CREATE TABLE "tickets" (
    tenant_id text NOT NULL,
    "ticket_id" bigint NOT NULL,
    "customer_id" bigint,
    "subject" text NOT NULL,
    "status" text NOT NULL,
    "priority" integer,
    "opened_at" timestamptz NOT NULL,
    "closed_at" timestamptz,
    "tags" jsonb,
    PRIMARY KEY (tenant_id, "ticket_id")
);
COMMENT ON TABLE "tickets" IS 'Module tickets: Support tickets';

CREATE TABLE "timesheets" (
    tenant_id text NOT NULL,
    "entry_id" bigint NOT NULL,
    "employee_id" bigint NOT NULL,
    "project_id" bigint,
    "worked_on" date NOT NULL,
    "hours" numeric NOT NULL,
    "billable" boolean,
    "description" text,
    PRIMARY KEY (tenant_id, "entry_id")
);
COMMENT ON TABLE "timesheets" IS 'Module timesheets: Time entries';

CREATE TABLE "transactions" (
    tenant_id text NOT NULL,
    "transaction_id" bigint NOT NULL,
    "account_code" text NOT NULL,
    "description" text,
    "quantity" integer,
    "amount" numeric NOT NULL,
    "vat_rate" numeric,
    "reconciled" boolean,
    "value_date" date NOT NULL,
    "booked_at" timestamptz,
    "memo" text,
    PRIMARY KEY (tenant_id, "transaction_id")
);
COMMENT ON TABLE "transactions" IS 'Module transactions: Ledger transactions (the benchmark''s module: ten mixed columns)';

CREATE TABLE "users" (
    tenant_id text NOT NULL,
    "user_id" bigint NOT NULL,
    "login" text NOT NULL,
    "email" text,
    "full_name" text,
    "admin" boolean,
    "last_login_at" timestamptz,
    PRIMARY KEY (tenant_id, "user_id")
);
COMMENT ON TABLE "users" IS 'Module users: Users of the third party''s application';

CREATE TABLE "vendor_credits" (
    tenant_id text NOT NULL,
    "credit_id" bigint NOT NULL,
    "supplier_id" bigint NOT NULL,
    "bill_id" bigint,
    "issued_on" date NOT NULL,
    "amount" numeric NOT NULL,
    "currency" text,
    PRIMARY KEY (tenant_id, "credit_id")
);
COMMENT ON TABLE "vendor_credits" IS 'Module vendor_credits: Credits from suppliers';

CREATE TABLE "warehouses" (
    tenant_id text NOT NULL,
    "warehouse_id" integer NOT NULL,
    "name" text NOT NULL,
    "location_id" integer,
    "capacity" integer,
    "active" boolean,
    PRIMARY KEY (tenant_id, "warehouse_id")
);
COMMENT ON TABLE "warehouses" IS 'Module warehouses: Warehouses';
