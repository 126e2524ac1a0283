from app.greeting import main

main()
