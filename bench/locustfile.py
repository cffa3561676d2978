"""Staff doing the day's mix through gunicorn (bench/load.py runs it headless): coordinators
on the worklist, course pages, searches, the visit list and the capacity view, putting a
course on hold and resuming it through the transition forms; clinicians and lab users on
their lists and course pages. Each simulated user takes a signed-in session the bench made
(LOCUST_PLAN, a JSON file: sessions per role, course ids, MRNs) rather than logging in, so
that fifty password hashes at the start are not what is measured.
"""

import itertools
import json
import os
import random
from pathlib import Path

from locust import HttpUser, between, task

PLAN = json.loads(Path(os.environ["LOCUST_PLAN"]).read_text())
_sessions = {role: itertools.cycle(PLAN["sessions"][role]) for role in PLAN["sessions"]}
_own_courses = itertools.cycle(PLAN["holdable_courses"])


class Staff(HttpUser):
    abstract = True
    role = ""
    wait_time = between(0.5, 1.5)

    def on_start(self):
        self.client.cookies.set("sessionid", next(_sessions[self.role]))

    def course_page(self):
        course = random.choice(PLAN["courses"])
        self.client.get(f"/admin/pathway/treatmentcourse/{course}/change/", name="course page")

    def search(self):
        mrn = random.choice(PLAN["mrns"])
        self.client.get(f"/admin/pathway/treatmentcourse/?q={mrn}", name="search by MRN")


class Coordinator(Staff):
    role = "coordinator"
    weight = 3

    def on_start(self):
        super().on_start()
        self.course = next(_own_courses)  # one course of its own to hold and resume
        self.on_hold = False

    @task(4)
    def worklist(self):
        self.client.get("/admin/", name="worklist")

    @task(3)
    def open_course(self):
        self.course_page()

    @task(2)
    def find(self):
        self.search()

    @task(2)
    def visits(self):
        self.client.get("/admin/scheduling/visit/", name="visit list")

    @task(1)
    def capacity(self):
        self.client.get("/admin/scheduling/resource/capacity/", name="capacity view")

    @task(1)
    def hold_or_resume(self):
        step, data = ("resume", {"note": ""}) if self.on_hold else ("hold", {"reason": "bench"})
        url = f"/admin/pathway/treatmentcourse/{self.course}/transition/{step}/"
        self.client.get(url, name="transition form")
        token = self.client.cookies.get("csrftoken", "")
        with self.client.post(
            url,
            data | {"csrfmiddlewaretoken": token},
            headers={"Referer": self.host + url},
            name="transition POST",
            allow_redirects=False,
            catch_response=True,
        ) as response:
            if response.status_code == 302:
                self.on_hold = not self.on_hold
                response.success()
            else:
                response.failure(f"{step} answered {response.status_code}")


class Clinician(Staff):
    role = "clinician"
    weight = 2

    @task(3)
    def open_course(self):
        self.course_page()

    @task(2)
    def find(self):
        self.search()

    @task(2)
    def courses(self):
        self.client.get("/admin/pathway/treatmentcourse/", name="course list")

    @task(1)
    def visits(self):
        self.client.get("/admin/scheduling/visit/", name="visit list")


class Lab(Staff):
    role = "lab"
    weight = 1

    @task(2)
    def batches(self):
        self.client.get("/admin/pathway/batch/", name="batch list")

    @task(2)
    def open_course(self):
        self.course_page()
