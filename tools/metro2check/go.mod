module arrears.local/metro2check

go 1.22
