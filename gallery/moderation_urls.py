"""Staff moderation pages (review queue, actions, audit log, blocklist), mounted at /moderation/.

All of them are staff-only (403 for anyone else) except `my_reports`, which shows a signed-in
person the reports they made themselves.
"""

from django.urls import path

from gallery import moderation_views as views

app_name = "moderation"

urlpatterns = [
    path("", views.queue, name="queue"),
    path("images/<int:pk>/", views.image_review, name="image"),
    path("images/<int:pk>/hide/", views.hide, name="hide"),
    path("images/<int:pk>/unhide/", views.unhide, name="unhide"),
    path("images/<int:pk>/delete/", views.delete, name="delete"),
    path("images/<int:pk>/dismiss/", views.dismiss, name="dismiss"),
    path("images/<int:pk>/clear/", views.clear, name="clear"),
    path("loras/<int:pk>/hide/", views.hide_lora, name="hide_lora"),
    path("loras/<int:pk>/unhide/", views.unhide_lora, name="unhide_lora"),
    path("loras/<int:pk>/dismiss/", views.dismiss_lora, name="dismiss_lora"),
    path("people/<str:username>/", views.person, name="person"),
    path("people/<str:username>/suspend/", views.suspend, name="suspend"),
    path("people/<str:username>/unsuspend/", views.unsuspend, name="unsuspend"),
    path("people/<str:username>/note/", views.note, name="note"),
    path("flagged/<int:pk>/dismiss/", views.dismiss_flagged, name="dismiss_flagged"),
    path("audit/", views.audit_log, name="audit"),
    path("blocklist/", views.blocklist, name="blocklist"),
    path("blocklist/<int:pk>/", views.blocklist_entry, name="blocklist_entry"),
    path("blocklist/<int:pk>/delete/", views.blocklist_delete, name="blocklist_delete"),
    path("my-reports/", views.my_reports, name="my_reports"),
]
