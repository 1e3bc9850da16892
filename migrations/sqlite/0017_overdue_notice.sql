-- A change still in progress after its planned end is told to its assignee and management once
-- per planned end: the planned end that was told (a reschedule makes a new one to tell).
ALTER TABLE change_requests ADD COLUMN overdue_notified_for TEXT;
