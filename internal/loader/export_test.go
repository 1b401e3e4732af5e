package loader

// UserHZ lets the external tests build a start time one tick off.
const UserHZ = userHZ
