// The dashboard's script, loaded by every page (base.html); pages work without it.
"use strict";
