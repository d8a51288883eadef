"""The schedules of the daily imports live in ``shared.schedules`` (the console shows them too)."""

from shared.schedules import Entry as Entry
from shared.schedules import Fire as Fire
from shared.schedules import Schedule as Schedule
from shared.schedules import import_entries as import_entries
from shared.schedules import schedule_of as schedule_of
