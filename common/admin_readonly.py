class ReadOnlyAdmin:
    """Mix into a ModelAdmin whose rows are written by the services and only ever read here
    (logs, deviations): no add, change or delete in the admin."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
