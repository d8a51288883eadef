-- Every module table is now partitioned by tenant, as 0006 did for full snapshots: a module that keeps rows
-- missing from its export swaps too when a day's export holds most of the tenant's rows (the rows the file
-- lacks are carried over into the new table: services/importer/swap.py), and MERGEs the file in otherwise.
-- Rows, key, comment and grants are kept (conduit_partition_by_tenant, 0006; partition names as 0007). The
-- tables' rows are copied once, into one partition per tenant: plan the time on a large database (about as
-- long as a first load of every table).
SELECT conduit_partition_by_tenant('accounts');
SELECT conduit_partition_by_tenant('assets');
SELECT conduit_partition_by_tenant('attachments');
SELECT conduit_partition_by_tenant('bank_accounts');
SELECT conduit_partition_by_tenant('bank_transactions');
SELECT conduit_partition_by_tenant('bills');
SELECT conduit_partition_by_tenant('budgets');
SELECT conduit_partition_by_tenant('campaigns');
SELECT conduit_partition_by_tenant('companies');
SELECT conduit_partition_by_tenant('contacts');
SELECT conduit_partition_by_tenant('contracts');
SELECT conduit_partition_by_tenant('credit_notes');
SELECT conduit_partition_by_tenant('customers');
SELECT conduit_partition_by_tenant('depreciations');
SELECT conduit_partition_by_tenant('discounts');
SELECT conduit_partition_by_tenant('employees');
SELECT conduit_partition_by_tenant('events');
SELECT conduit_partition_by_tenant('exchange_rates');
SELECT conduit_partition_by_tenant('expenses');
SELECT conduit_partition_by_tenant('invoice_lines');
SELECT conduit_partition_by_tenant('invoices');
SELECT conduit_partition_by_tenant('items');
SELECT conduit_partition_by_tenant('journal_entries');
SELECT conduit_partition_by_tenant('journal_lines');
SELECT conduit_partition_by_tenant('leads');
SELECT conduit_partition_by_tenant('leave_requests');
SELECT conduit_partition_by_tenant('legacy_customers');
SELECT conduit_partition_by_tenant('notes');
SELECT conduit_partition_by_tenant('opportunities');
SELECT conduit_partition_by_tenant('order_lines');
SELECT conduit_partition_by_tenant('orders');
SELECT conduit_partition_by_tenant('payments');
SELECT conduit_partition_by_tenant('payroll_runs');
SELECT conduit_partition_by_tenant('payslips');
SELECT conduit_partition_by_tenant('projects');
SELECT conduit_partition_by_tenant('purchase_order_lines');
SELECT conduit_partition_by_tenant('purchase_orders');
SELECT conduit_partition_by_tenant('quotes');
SELECT conduit_partition_by_tenant('recurring_invoices');
SELECT conduit_partition_by_tenant('returns');
SELECT conduit_partition_by_tenant('shipments');
SELECT conduit_partition_by_tenant('stock_movements');
SELECT conduit_partition_by_tenant('subscriptions');
SELECT conduit_partition_by_tenant('suppliers');
SELECT conduit_partition_by_tenant('tasks');
SELECT conduit_partition_by_tenant('ticket_comments');
SELECT conduit_partition_by_tenant('tickets');
SELECT conduit_partition_by_tenant('timesheets');
SELECT conduit_partition_by_tenant('transactions');
SELECT conduit_partition_by_tenant('users');
SELECT conduit_partition_by_tenant('vendor_credits');
