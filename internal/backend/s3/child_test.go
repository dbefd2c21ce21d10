package s3_test

const childEnv = "BLOCKWISE_S3_CHILD"

func runChild() int { return 2 }
